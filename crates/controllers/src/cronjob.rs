//! The CronJob controller: at each scheduled time (in `timeZone`, or the manager's local zone)
//! it creates the Job `<cronjob>-<minutes since the epoch>`, unless `suspend`ed, too late for
//! `startingDeadlineSeconds`, or forbidden by `concurrencyPolicy` (`Forbid` skips while one
//! runs, `Replace` deletes the running ones first). Like kube, the earliest time it considers is
//! `status.lastScheduleTime` (else the creation time), so a missed schedule runs once when the
//! controller comes back. It keeps `successfulJobsHistoryLimit`/`failedJobsHistoryLimit`
//! finished Jobs, and reports `active`, `lastScheduleTime` and `lastSuccessfulTime`. It sleeps
//! until the next scheduled time: no polling.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::cron::Schedule;
use crate::util::{self, Error, Result};

/// The annotation recording when a Job was scheduled.
pub const SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

struct Ctx {
    client: Client,
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client) {
    let cronjobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    Controller::new(cronjobs, watcher::Config::default())
        .owns(jobs, watcher::Config::default())
        .run(reconcile, util::retry, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

/// The most recent scheduled time in `(earliest, now]`, searched in windows growing back from
/// `now`, so an every-minute schedule after a long gap stays cheap.
fn most_recent(s: &Schedule, earliest: Timestamp, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    for days in [0.05, 1.0, 31.0, 366.0, 5.0 * 366.0] {
        let window = jiff::SignedDuration::from_secs((days * 86_400.0) as i64);
        let from = now.checked_sub(window).unwrap_or(earliest).max(earliest);
        if let Some(t) = s.last_between(from, now, tz) {
            return Some(t);
        }
        if from == earliest {
            return None;
        }
    }
    None
}

fn job_ref(job: &Job) -> Value {
    json!({"kind": "Job", "apiVersion": "batch/v1", "name": job.name_any(), "namespace": job.namespace(),
        "uid": job.uid()})
}

fn started(job: &Job) -> Option<Timestamp> {
    job.status.as_ref().and_then(|s| s.start_time.as_ref()).or(job.metadata.creation_timestamp.as_ref()).map(|t| t.0)
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let uid = cj.uid().unwrap_or_default();
    let spec = cj.spec.clone().ok_or_else(|| Error::Invalid("no spec".into()))?;
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let cj_api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();
    let owned: Vec<Job> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| util::controller_uid(&j.metadata) == Some(uid.as_str()))
        .collect();
    let mut active: Vec<Job> = owned.iter().filter(|j| crate::job::finished(j).is_none()).cloned().collect();
    let status = cj.status.clone().unwrap_or_default();
    let mut last_success = status.last_successful_time.as_ref().map(|t| t.0);
    for j in &owned {
        if let Some((true, at)) = crate::job::finished(j) {
            let done = j.status.as_ref().and_then(|s| s.completion_time.as_ref()).map(|t| t.0).unwrap_or(at);
            last_success = Some(last_success.map_or(done, |l| l.max(done)));
        }
    }

    // Finished Jobs beyond the history limits go, oldest first.
    for (ok, limit) in
        [(true, spec.successful_jobs_history_limit.unwrap_or(3)), (false, spec.failed_jobs_history_limit.unwrap_or(1))]
    {
        let mut done: Vec<&Job> =
            owned.iter().filter(|j| crate::job::finished(j).is_some_and(|(s, _)| s == ok)).collect();
        done.sort_by_key(|j| started(j));
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        for j in done.into_iter().take(extra) {
            util::delete(&api, &j.name_any(), &DeleteParams::background()).await?;
        }
    }

    let mut last_schedule = status.last_schedule_time.as_ref().map(|t| t.0);
    let mut requeue = None;
    let schedule = Schedule::parse(&spec.schedule).map_err(|e| Error::Invalid(format!("schedule: {e}")));
    let tz = match spec.time_zone.as_deref() {
        Some(z) => TimeZone::get(z).map_err(|e| Error::Invalid(format!("unknown time zone {z:?}: {e}"))),
        None => Ok(TimeZone::system()),
    };
    match (schedule, tz) {
        (Ok(schedule), Ok(tz)) if spec.suspend != Some(true) => {
            let earliest = last_schedule.or(cj.metadata.creation_timestamp.as_ref().map(|t| t.0)).unwrap_or(now);
            if let Some(t) = most_recent(&schedule, earliest, now, &tz) {
                let too_late = spec.starting_deadline_seconds.is_some_and(|s| now.duration_since(t).as_secs() > s);
                let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
                if too_late {
                    tracing::debug!(cronjob = %name, "missed starting window");
                } else if policy == "Forbid" && !active.is_empty() {
                    tracing::debug!(cronjob = %name, "not starting: the previous Job still runs (Forbid)");
                } else {
                    if policy == "Replace" {
                        for j in active.drain(..) {
                            util::delete(&api, &j.name_any(), &DeleteParams::background()).await?;
                        }
                    }
                    let template = spec.job_template.clone();
                    let tmeta = template.metadata.clone().unwrap_or_default();
                    let mut annotations = tmeta.annotations.unwrap_or_default();
                    let at = t.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
                    annotations.insert(SCHEDULED.into(), at.replace("+00:00", "Z"));
                    let job = Job {
                        metadata: ObjectMeta {
                            name: Some(format!("{name}-{}", t.as_second() / 60)),
                            namespace: Some(ns.clone()),
                            labels: tmeta.labels,
                            annotations: Some(annotations),
                            owner_references: Some(vec![util::controller_ref(cj.as_ref())]),
                            ..Default::default()
                        },
                        spec: template.spec,
                        status: None,
                    };
                    match api.create(&PostParams::default(), &job).await {
                        Ok(j) => active.push(j),
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
                            return Err(Error::Invalid(format!("cronjob {name}: job creation refused: {}", e.message)));
                        }
                        Err(e) => return Err(e.into()),
                    }
                    last_schedule = Some(t);
                }
            }
            if let Some(next) = schedule.next_after(now, &tz) {
                requeue = Some(now.duration_until(next).unsigned_abs() + Duration::from_millis(100));
            }
        }
        (Err(e), _) | (_, Err(e)) => tracing::debug!(cronjob = %name, error = %e, "cannot schedule"),
        _ => {}
    }

    let new_status = json!({
        "active": active.iter().map(job_ref).collect::<Vec<_>>(),
        "lastScheduleTime": last_schedule.map(util::timestamp),
        "lastSuccessfulTime": last_success.map(util::timestamp),
    });
    let current = json!({
        "active": status.active.iter().flatten().map(|r| json!({"kind": r.kind, "apiVersion": r.api_version,
            "name": r.name, "namespace": r.namespace, "uid": r.uid})).collect::<Vec<_>>(),
        "lastScheduleTime": status.last_schedule_time.as_ref().map(|t| util::timestamp(t.0)),
        "lastSuccessfulTime": status.last_successful_time.as_ref().map(|t| util::timestamp(t.0)),
    });
    if new_status != current {
        let mut patch = new_status;
        if patch["active"].as_array().is_some_and(Vec::is_empty) {
            patch["active"] = Value::Null;
        }
        cj_api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": patch}))).await?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_recent_after_a_long_gap() {
        let every = Schedule::parse("* * * * *").unwrap();
        let now: Timestamp = "2026-03-01T12:00:30Z".parse().unwrap();
        let earliest: Timestamp = "2020-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(most_recent(&every, earliest, now, &TimeZone::UTC), Some("2026-03-01T12:00:00Z".parse().unwrap()));
        let yearly = Schedule::parse("@yearly").unwrap();
        assert_eq!(most_recent(&yearly, earliest, now, &TimeZone::UTC), Some("2026-01-01T00:00:00Z".parse().unwrap()));
        let recent: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        assert_eq!(most_recent(&every, recent, now, &TimeZone::UTC), None, "nothing after the last schedule yet");
    }
}
