//! Content negotiation: which representation a client accepts (`Accept`), and what format a
//! request body is in (`Content-Type`).

/// One media range of an `Accept` header, with the parameters Kubernetes uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lower-cased.
    pub essence: String,
    /// `as=` (Table, PartialObjectMetadata, APIGroupDiscoveryList, ...).
    pub as_kind: String,
    /// `g=`.
    pub group: String,
    /// `v=`.
    pub version: String,
    /// `stream=`.
    pub stream: String,
}

impl MediaType {
    /// Parses one media type with its parameters.
    pub fn parse(s: &str) -> MediaType {
        let mut parts = s.split(';');
        let mut mt =
            MediaType { essence: parts.next().unwrap_or("").trim().to_ascii_lowercase(), ..Default::default() };
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "as" => mt.as_kind = v,
                "g" => mt.group = v,
                "v" => mt.version = v,
                "stream" => mt.stream = v,
                _ => {}
            }
        }
        mt
    }

    /// Whether this is JSON (or anything a JSON answer satisfies).
    pub fn is_json_like(&self) -> bool {
        matches!(self.essence.as_str(), "application/json" | "*/*" | "application/*" | "")
    }
}

/// Parses an `Accept` header into its media ranges, in the client's order (Kubernetes clients
/// list preferences in order and do not use `q`).
pub fn accept_list(accept: Option<&str>) -> Vec<MediaType> {
    match accept {
        None => vec![MediaType { essence: "application/json".into(), ..Default::default() }],
        Some(a) => a.split(',').map(MediaType::parse).filter(|m| !m.essence.is_empty()).collect(),
    }
}

/// How an object or list is rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Plain JSON.
    Json,
    /// YAML.
    Yaml,
    /// `meta.k8s.io` Table (v1 or v1beta1).
    Table(String),
    /// `meta.k8s.io` PartialObjectMetadata or PartialObjectMetadataList (v1 or v1beta1).
    PartialMetadata(String),
    /// Kubernetes protobuf (`application/vnd.kubernetes.protobuf`), for built-in kinds.
    Protobuf,
}

/// The media types vt serves for resources.
pub const SERVED: &[&str] = &["application/json", "application/yaml"];

/// Picks the output for a resource request from the `Accept` header; `None` means 406.
/// `tables` says whether the resource can be rendered as a Table, `protobuf` whether it has
/// a protobuf message (built-in kinds do; custom resources do not).
pub fn choose(accept: Option<&str>, tables: bool, protobuf: bool) -> Option<Output> {
    for m in accept_list(accept) {
        if m.as_kind.is_empty() {
            match m.essence.as_str() {
                "application/json" | "*/*" | "application/*" => return Some(Output::Json),
                "application/yaml" => return Some(Output::Yaml),
                "application/vnd.kubernetes.protobuf" if protobuf => return Some(Output::Protobuf),
                _ => continue,
            }
        }
        if !m.is_json_like() || m.group != "meta.k8s.io" || !matches!(m.version.as_str(), "v1" | "v1beta1") {
            continue;
        }
        match m.as_kind.as_str() {
            "Table" if tables => return Some(Output::Table(m.version.clone())),
            "PartialObjectMetadata" | "PartialObjectMetadataList" => {
                return Some(Output::PartialMetadata(m.version.clone()));
            }
            _ => {}
        }
    }
    None
}

/// The format of a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`.
    Json,
    /// `application/yaml`.
    Yaml,
    /// `application/json-patch+json`.
    JsonPatch,
    /// `application/merge-patch+json`.
    MergePatch,
    /// `application/strategic-merge-patch+json`.
    StrategicMergePatch,
    /// `application/apply-patch+yaml` (and `+cbor`, not served).
    ApplyPatch,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
}

/// The body format named by a `Content-Type` header, if known.
pub fn body_format(content_type: Option<&str>) -> Option<BodyFormat> {
    let essence =
        content_type.unwrap_or("application/json").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    Some(match essence.as_str() {
        "application/json" | "" => BodyFormat::Json,
        "application/yaml" => BodyFormat::Yaml,
        "application/json-patch+json" => BodyFormat::JsonPatch,
        "application/merge-patch+json" => BodyFormat::MergePatch,
        "application/strategic-merge-patch+json" => BodyFormat::StrategicMergePatch,
        "application/apply-patch+yaml" => BodyFormat::ApplyPatch,
        "application/vnd.kubernetes.protobuf" => BodyFormat::Protobuf,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_get_prefers_tables_then_json() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(choose(Some(kubectl), true, true), Some(Output::Table("v1".into())));
        assert_eq!(choose(Some(kubectl), false, true), Some(Output::Json));
        assert_eq!(choose(None, true, true), Some(Output::Json));
        assert_eq!(choose(Some("text/html"), true, true), None);
    }

    /// client-go with `ContentType: protobuf` accepts protobuf, then JSON; custom resources
    /// have no protobuf form and get JSON; Tables are never protobuf.
    #[test]
    fn protobuf_when_preferred_and_possible() {
        let client_go = "application/vnd.kubernetes.protobuf, application/json";
        assert_eq!(choose(Some(client_go), true, true), Some(Output::Protobuf));
        assert_eq!(choose(Some(client_go), true, false), Some(Output::Json));
        assert_eq!(choose(Some("application/vnd.kubernetes.protobuf"), true, false), None);
        let table = "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json";
        assert_eq!(choose(Some(table), true, true), Some(Output::Json));
    }
}
