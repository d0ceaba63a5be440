//! Server-side printing: `meta.k8s.io` Tables (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`),
//! which is how `kubectl get` renders every kind without knowing it.
//!
//! Like kube-apiserver, the server always prints the wide table: every column (priority 1 ones
//! are what `-o wide` adds) and every cell. Column names are Title-Case on the wire; kubectl
//! upper-cases them. Kinds without a printer get the default convertor: `Name` and `Created At`.
//! Each row carries the object as `includeObject` asks: `Metadata` (the default) gives a
//! `PartialObjectMetadata`, `Object` the whole object, `None` nothing.

mod printers;

use serde_json::{Map, Value, json};

use crate::registry::ResourceType;
use crate::status::ApiError;

/// One column of a Table.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// Title-Case name, as kube-apiserver sends it.
    pub name: &'static str,
    /// `string`, `integer`, `boolean`, `date`.
    pub ty: &'static str,
    /// `name` for the name column, else empty.
    pub format: &'static str,
    /// 0: always shown; 1: shown by `-o wide`.
    pub priority: u8,
    /// What the column shows.
    pub description: &'static str,
}

/// What each row's `object` holds (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    /// `null`.
    None,
    /// A `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

/// Parses `includeObject`; unknown values are a 400 as in kube-apiserver.
pub fn parse_include(v: Option<&str>) -> Result<Include, ApiError> {
    match v.unwrap_or("") {
        "" | "Metadata" => Ok(Include::Metadata),
        "Object" => Ok(Include::Object),
        "None" => Ok(Include::None),
        other => Err(ApiError::bad_request(format!(
            "Unable to convert to Table as requested: includeObject: Invalid value: {other:?}: must be 'Metadata', 'Object', 'None', or empty"
        ))),
    }
}

/// How to print one kind.
pub(crate) struct Printer {
    pub columns: &'static [Column],
    /// The cells of one object's row and the row's conditions.
    pub cells: fn(&Value, jiff::Timestamp) -> Row,
}

/// A row's cells and, for pods, its conditions.
pub(crate) struct Row {
    pub cells: Vec<Value>,
    pub conditions: Option<Value>,
}

impl From<Vec<Value>> for Row {
    fn from(cells: Vec<Value>) -> Row {
        Row { cells, conditions: None }
    }
}

/// Where a Table's columns come from.
enum Source {
    /// A built-in printer (or the default convertor).
    Printer(&'static Printer),
    /// A CRD's `additionalPrinterColumns` (Age alone when it declares none).
    Custom(Vec<crate::crd::PrinterColumn>),
}

/// Converts an object or a list to a Table.
pub struct Converter {
    source: Source,
    api_version: String,
    include: Include,
    /// The type (`apiVersion`, `kind`) row objects carry with `includeObject=Object`.
    object_type: (String, String),
    list_kind: String,
}

impl Converter {
    /// A converter for `rt` producing `meta.k8s.io/<version>` Tables.
    pub fn new(rt: &ResourceType, subresource: &str, version: &str, include: Include) -> Converter {
        let source = match &rt.custom {
            Some(c) if subresource != "scale" => {
                let mut columns = c.columns.clone();
                if columns.is_empty() {
                    columns.push(crate::crd::PrinterColumn {
                        name: "Age".into(),
                        ty: "date".into(),
                        format: String::new(),
                        description: "Time since the object was created.".into(),
                        priority: 0,
                        json_path: ".metadata.creationTimestamp".into(),
                    });
                }
                Source::Custom(columns)
            }
            _ => Source::Printer(printers::for_kind(rt, subresource)),
        };
        let object_type = if subresource == "scale" {
            ("autoscaling/v1".to_string(), "Scale".to_string())
        } else {
            (rt.api_version(), rt.kind.clone())
        };
        Converter {
            source,
            api_version: format!("meta.k8s.io/{version}"),
            include,
            object_type,
            list_kind: rt.list_kind.clone(),
        }
    }

    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Row {
        match &self.source {
            Source::Printer(p) => (p.cells)(obj, now),
            Source::Custom(columns) => {
                let mut cells = vec![obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
                cells.extend(columns.iter().map(|c| custom_cell(c, obj, now)));
                Row { cells, conditions: None }
            }
        }
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Value {
        let Row { cells, conditions } = self.cells(obj, now);
        // Maps are built by hand throughout: `json!` copies interpolated values through serde.
        let object = match self.include {
            Include::None => Value::Null,
            Include::Object => {
                // List items lose their type; kube converts each row object to the request's
                // version, which sets it again.
                let mut o = obj.clone();
                if let Some(m) = o.as_object_mut() {
                    m.insert("apiVersion".into(), Value::String(self.object_type.0.clone()));
                    m.insert("kind".into(), Value::String(self.object_type.1.clone()));
                }
                o
            }
            Include::Metadata => {
                let mut m = Map::new();
                m.insert("kind".into(), Value::String("PartialObjectMetadata".into()));
                m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
                m.insert("metadata".into(), obj.get("metadata").cloned().unwrap_or_else(|| Value::Object(Map::new())));
                Value::Object(m)
            }
        };
        let mut row = Map::new();
        row.insert("cells".into(), Value::Array(cells));
        if let Some(c) = conditions {
            row.insert("conditions".into(), c);
        }
        row.insert("object".into(), object);
        Value::Object(row)
    }

    fn columns(&self) -> Value {
        let column = |name: &str, ty: &str, format: &str, description: &str, priority: i64| json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority});
        Value::Array(match &self.source {
            Source::Printer(p) => {
                p.columns.iter().map(|c| column(c.name, c.ty, c.format, c.description, i64::from(c.priority))).collect()
            }
            Source::Custom(columns) => {
                std::iter::once(column("Name", "string", "name", "Name must be unique within a namespace.", 0))
                    .chain(columns.iter().map(|c| column(&c.name, &c.ty, &c.format, &c.description, c.priority)))
                    .collect()
            }
        })
    }

    /// The Table of an object or a list (a list has `items`). `headers: false` leaves
    /// `columnDefinitions` null, as watch events after the first.
    pub fn convert(&self, v: &Value, headers: bool) -> Value {
        // Ages are computed at conversion time (a watch converts each event as it happens).
        let now = jiff::Timestamp::now();
        let mut meta = Map::new();
        let rows: Value;
        let is_list = v.get("kind").and_then(Value::as_str) == Some(self.list_kind.as_str());
        if let Some(items) = v.get("items").and_then(Value::as_array).filter(|_| is_list) {
            if let Some(m) = v.get("metadata").and_then(Value::as_object) {
                for k in ["resourceVersion", "continue", "remainingItemCount"] {
                    if let Some(x) = m.get(k).filter(|x| !x.is_null() && x.as_str() != Some("")) {
                        meta.insert(k.into(), x.clone());
                    }
                }
            }
            // The default convertor leaves an empty list's rows nil.
            let default = matches!(self.source, Source::Printer(p) if std::ptr::eq(p, &printers::DEFAULT));
            rows = if items.is_empty() && default {
                Value::Null
            } else {
                Value::Array(items.iter().map(|i| self.row(i, now)).collect())
            };
        } else {
            if let Some(rv) = v.pointer("/metadata/resourceVersion").filter(|x| x.as_str() != Some("")) {
                meta.insert("resourceVersion".into(), rv.clone());
            }
            rows = Value::Array(vec![self.row(v, now)]);
        }
        let mut table = Map::new();
        table.insert("kind".into(), Value::String("Table".into()));
        table.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        table.insert("metadata".into(), Value::Object(meta));
        table.insert("columnDefinitions".into(), if headers { self.columns() } else { Value::Null });
        table.insert("rows".into(), rows);
        Value::Object(table)
    }
}

/// A custom column's cell (the CRD table convertor's `cellForJSONValue`): the first value the
/// JSONPath selects, as the column's type; null when absent or of another type.
fn custom_cell(c: &crate::crd::PrinterColumn, obj: &Value, now: jiff::Timestamp) -> Value {
    let Some(v) = crate::crd::jsonpath::find(obj, &c.json_path).into_iter().next() else {
        return Value::Null;
    };
    match (c.ty.as_str(), v) {
        (_, Value::Null) => Value::Null,
        ("integer", Value::Number(n)) => json!(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))),
        ("number", Value::Number(n)) => json!(n.as_f64()),
        ("boolean", Value::Bool(b)) => json!(b),
        ("string", Value::String(s)) => json!(s),
        ("string", other) => json!(other.to_string()),
        ("date", Value::String(s)) => match s.parse::<jiff::Timestamp>() {
            Ok(t) => json!(human_duration(now.duration_since(t))),
            Err(_) => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

/// `duration.HumanDuration`: the AGE column's format (`45s`, `3m10s`, `5h`, `2d1h`, `3y`).
pub fn human_duration(d: jiff::SignedDuration) -> String {
    let secs = d.as_secs();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{dy}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration as D;

    /// Pins apimachinery's `HumanDuration` (its duration_test.go vectors).
    #[test]
    fn human_durations() {
        let h = |s: i64| D::from_secs(s);
        for (d, want) in [
            (D::ZERO, "0s"),
            (D::from_millis(999), "0s"),
            (h(1), "1s"),
            (h(70), "70s"),
            (D::from_millis(119_999), "119s"),
            (h(120), "2m"),
            (h(121), "2m1s"),
            (h(190), "3m10s"),
            (D::from_millis(599_999), "9m59s"),
            (h(600), "10m"),
            (h(601), "10m"),
            (h(70 * 60), "70m"),
            (h(3 * 3600), "3h"),
            (h(3 * 3600 + 60), "3h1m"),
            (D::from_millis((8 * 3600 * 1000) - 1), "7h59m"),
            (h(8 * 3600), "8h"),
            (h(47 * 3600), "47h"),
            (h(48 * 3600), "2d"),
            (h(49 * 3600), "2d1h"),
            (D::from_millis(8 * 86400 * 1000 - 1), "7d23h"),
            (h(8 * 86400), "8d"),
            (h(367 * 86400), "367d"),
            (h(730 * 86400), "2y"),
            (h(731 * 86400), "2y1d"),
            (h(8 * 365 * 86400), "8y"),
            (h(-2), "<invalid>"),
            (D::new(-1, -999_999_999), "0s"),
        ] {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn include_object_values() {
        assert_eq!(parse_include(None).unwrap(), Include::Metadata);
        assert_eq!(parse_include(Some("Object")).unwrap(), Include::Object);
        assert_eq!(parse_include(Some("None")).unwrap(), Include::None);
        let e = parse_include(Some("All")).unwrap_err();
        assert_eq!(e.code, 400);
    }
}
