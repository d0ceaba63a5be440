//! Cron schedules as CronJobs write them: five fields (minute, hour, day of month, month, day
//! of week) with `*`, lists, ranges, steps and month/day names, the `@hourly`-style macros,
//! and a time zone (IANA name, or the controller's UTC).

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_star: bool,
    weekdays_star: bool,
}

fn field(spec: &str, min: u32, max: u32, names: &[&str]) -> Result<(Vec<bool>, bool), String> {
    let mut set = vec![false; (max + 1) as usize];
    let star = spec == "*" || spec == "?";
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + if names.len() == 12 { 1 } else { 0 });
        }
        s.parse::<u32>().map_err(|_| format!("invalid value {s:?}"))
    };
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| format!("invalid step in {part:?}"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("invalid step in {part:?}"));
        }
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is out of range {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            set[v as usize] = true;
            v += step;
        }
    }
    Ok((set, star))
}

impl Schedule {
    /// Parses a schedule.
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        let spec = match spec.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s => s,
        };
        let parts: Vec<&str> = spec.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!("expected exactly 5 fields, found {}: {spec:?}", parts.len()));
        }
        const MONTHS: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
        const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let (minutes, _) = field(parts[0], 0, 59, &[])?;
        let (hours, _) = field(parts[1], 0, 23, &[])?;
        let (days, days_star) = field(parts[2], 1, 31, &[])?;
        let (months, _) = field(parts[3], 1, 12, MONTHS)?;
        let (mut weekdays, weekdays_star) = field(parts[4], 0, 7, DAYS)?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Schedule { minutes, hours, days, months, weekdays, days_star, weekdays_star })
    }

    fn day_matches(&self, dt: &DateTime) -> bool {
        let dom = self.days[dt.day() as usize];
        let dow = self.weekdays[dt.weekday().to_sunday_zero_offset() as usize];
        // Standard cron: with both restricted, either matches.
        if self.days_star || self.weekdays_star { dom && dow } else { dom || dow }
    }

    /// The first scheduled time strictly after `after`, in `tz` (within about five years).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        // The next whole minute.
        let mut dt = start.with().second(0).subsec_nanosecond(0).build().ok()?.checked_add(1.minute()).ok()?;
        let limit = dt.checked_add(5.years()).ok()?;
        while dt < limit {
            if !self.months[dt.month() as usize] {
                dt = dt.first_of_month().checked_add(1.month()).ok()?.with().hour(0).minute(0).build().ok()?;
                continue;
            }
            if !self.day_matches(&dt) {
                dt = dt.tomorrow().ok()?.with().hour(0).minute(0).build().ok()?;
                continue;
            }
            if !self.hours[dt.hour() as usize] {
                dt = dt.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?;
                continue;
            }
            if !self.minutes[dt.minute() as usize] {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            // A local time that does not exist (DST gap) resolves forward, as cron does.
            let z: Zoned = dt.to_zoned(tz.clone()).ok()?;
            let t = z.timestamp();
            if t > after {
                return Some(t);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }

    /// The latest scheduled time in `(after, until]`.
    pub fn last_between(&self, after: Timestamp, until: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut found = None;
        let mut t = after;
        while let Some(n) = self.next_after(t, tz) {
            if n > until {
                break;
            }
            found = Some(n);
            t = n;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn schedules() {
        let utc = TimeZone::UTC;
        let every5 = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(every5.next_after(ts("2026-01-01T10:02:30Z"), &utc), Some(ts("2026-01-01T10:05:00Z")));
        assert_eq!(every5.next_after(ts("2026-01-01T10:05:00Z"), &utc), Some(ts("2026-01-01T10:10:00Z")));
        let weekdays9 = Schedule::parse("0 9 * * mon-fri").unwrap();
        // 2026-01-03 is a Saturday.
        assert_eq!(weekdays9.next_after(ts("2026-01-03T00:00:00Z"), &utc), Some(ts("2026-01-05T09:00:00Z")));
        let monthly = Schedule::parse("@monthly").unwrap();
        assert_eq!(monthly.next_after(ts("2026-01-15T00:00:00Z"), &utc), Some(ts("2026-02-01T00:00:00Z")));
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let nine = Schedule::parse("0 9 * * *").unwrap();
        assert_eq!(nine.next_after(ts("2026-01-01T00:00:00Z"), &berlin), Some(ts("2026-01-01T08:00:00Z")));
        assert_eq!(
            every5.last_between(ts("2026-01-01T10:00:00Z"), ts("2026-01-01T10:17:00Z"), &utc),
            Some(ts("2026-01-01T10:15:00Z"))
        );
        for bad in ["* * * *", "61 * * * *", "*/0 * * * *", "a b c d e"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}
