//! Pod Security Standards (`baseline` and `restricted`, as of Kubernetes 1.33's "latest"), the
//! checks kube-apiserver's PodSecurity admission makes, worded as it words them. The API
//! server enforces them at admission (`admission/podsecurity.rs`); a virtual cluster's syncer
//! checks them again before a pod reaches the host. `privileged` allows everything the
//! standards cover.

use serde_json::Value;

/// A Pod Security level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// No restrictions.
    Privileged,
    /// Prevents known privilege escalations (host namespaces, privileged containers, ...).
    Baseline,
    /// Baseline and hardening best practices (non-root, no escalation, seccomp, drop ALL).
    Restricted,
}

impl Level {
    /// Parses a level name (`privileged`, `baseline`, `restricted`); unknown names are baseline.
    pub fn parse(s: &str) -> Level {
        match s {
            "privileged" => Level::Privileged,
            "restricted" => Level::Restricted,
            _ => Level::Baseline,
        }
    }

    /// Parses a level name, `None` for an unknown one.
    pub fn parse_strict(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    /// The level's name.
    pub fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

const DEFAULT_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const SELINUX_TYPES: &[&str] = &["container_t", "container_init_t", "container_kvm_t", "container_engine_t"];
const RESTRICTED_VOLUMES: &[&str] =
    &["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

fn quoted(items: &[String]) -> String {
    items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ")
}

/// Every container of a pod spec (init, regular, ephemeral), with its name.
pub fn containers(spec: &Value) -> impl Iterator<Item = (&str, &Value)> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| spec.get(k).and_then(Value::as_array).into_iter().flatten())
        .map(|c| (c.get("name").and_then(Value::as_str).unwrap_or(""), c))
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn is_true(v: Option<&Value>) -> bool {
    v.and_then(Value::as_bool) == Some(true)
}

/// Joins "container "a"" style subjects as kube does ("containers "a", "b"").
fn subjects(names: &[String]) -> String {
    match names {
        [one] => format!("container {one:?}"),
        many => format!("containers {}", quoted(many)),
    }
}

/// Checks a pod spec (JSON) against `level`; `Err` is kube's message:
/// `violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), ...`.
pub fn check(spec: &Value, level: Level) -> Result<(), String> {
    if level == Level::Privileged {
        return Ok(());
    }
    let mut v: Vec<String> = Vec::new();
    let psc = spec.get("securityContext").cloned().unwrap_or(Value::Null);

    // Baseline.
    let host_process: Vec<String> = containers(spec)
        .filter(|(_, c)| is_true(at(c, &["securityContext", "windowsOptions", "hostProcess"])))
        .map(|(n, _)| n.to_string())
        .collect();
    if is_true(at(&psc, &["windowsOptions", "hostProcess"])) || !host_process.is_empty() {
        v.push("hostProcess (pod or containers must not set securityContext.windowsOptions.hostProcess=true)".into());
    }
    let ns: Vec<&str> = ["hostNetwork", "hostPID", "hostIPC"].into_iter().filter(|k| is_true(spec.get(*k))).collect();
    if !ns.is_empty() {
        v.push(format!("host namespaces ({})", ns.iter().map(|k| format!("{k}=true")).collect::<Vec<_>>().join(", ")));
    }
    let privileged: Vec<String> = containers(spec)
        .filter(|(_, c)| is_true(at(c, &["securityContext", "privileged"])))
        .map(|(n, _)| n.to_string())
        .collect();
    if !privileged.is_empty() {
        v.push(format!("privileged ({} must not set securityContext.privileged=true)", subjects(&privileged)));
    }
    let mut caps: Vec<(String, Vec<String>)> = Vec::new();
    for (n, c) in containers(spec) {
        let added: Vec<String> = at(c, &["securityContext", "capabilities", "add"])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|cap| !DEFAULT_CAPS.contains(cap))
            .map(str::to_string)
            .collect();
        if !added.is_empty() {
            caps.push((n.to_string(), added));
        }
    }
    if !caps.is_empty() {
        let names: Vec<String> = caps.iter().map(|(n, _)| n.clone()).collect();
        let mut all: Vec<String> = caps.into_iter().flat_map(|(_, c)| c).collect();
        all.sort();
        all.dedup();
        v.push(format!(
            "non-default capabilities ({} must not include {} in securityContext.capabilities.add)",
            subjects(&names),
            quoted(&all)
        ));
    }
    let host_paths: Vec<String> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|vol| vol.get("hostPath").is_some())
        .filter_map(|vol| vol.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    if !host_paths.is_empty() {
        let what = if host_paths.len() == 1 { "volume" } else { "volumes" };
        v.push(format!("hostPath volumes ({what} {})", quoted(&host_paths)));
    }
    let mut host_ports: Vec<(String, Vec<i64>)> = Vec::new();
    for (n, c) in containers(spec) {
        let ports: Vec<i64> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
            .filter(|p| *p != 0)
            .collect();
        if !ports.is_empty() {
            host_ports.push((n.to_string(), ports));
        }
    }
    if !host_ports.is_empty() {
        let names: Vec<String> = host_ports.iter().map(|(n, _)| n.clone()).collect();
        let ports: Vec<String> = host_ports.iter().flat_map(|(_, p)| p.iter().map(i64::to_string)).collect();
        let what = if ports.len() == 1 { "hostPort" } else { "hostPorts" };
        v.push(format!("hostPort ({} uses {what} {})", subjects(&names), ports.join(", ")));
    }
    let apparmor_bad = |sc: &Value| at(sc, &["appArmorProfile", "type"]).and_then(Value::as_str) == Some("Unconfined");
    if apparmor_bad(&psc) || containers(spec).any(|(_, c)| c.get("securityContext").is_some_and(apparmor_bad)) {
        v.push("forbidden AppArmor profile (appArmorProfile.type must not be \"Unconfined\")".into());
    }
    let selinux_bad = |sc: &Value| {
        let Some(o) = sc.get("seLinuxOptions") else { return false };
        let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
        (!ty.is_empty() && !SELINUX_TYPES.contains(&ty))
            || o.get("user").and_then(Value::as_str).is_some_and(|u| !u.is_empty())
            || o.get("role").and_then(Value::as_str).is_some_and(|r| !r.is_empty())
    };
    if selinux_bad(&psc) || containers(spec).any(|(_, c)| c.get("securityContext").is_some_and(selinux_bad)) {
        v.push("seLinuxOptions (pod or containers must not set a custom SELinux type, user or role)".into());
    }
    let proc_mount: Vec<String> = containers(spec)
        .filter(|(_, c)| {
            at(c, &["securityContext", "procMount"]).and_then(Value::as_str).is_some_and(|p| p != "Default")
        })
        .map(|(n, _)| n.to_string())
        .collect();
    if !proc_mount.is_empty() {
        v.push(format!("procMount ({} must not set securityContext.procMount to \"Unmasked\")", subjects(&proc_mount)));
    }
    let unconfined = |sc: &Value| at(sc, &["seccompProfile", "type"]).and_then(Value::as_str) == Some("Unconfined");
    if unconfined(&psc) {
        v.push("seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")".into());
    }
    let unconfined_c: Vec<String> = containers(spec)
        .filter(|(_, c)| c.get("securityContext").is_some_and(unconfined))
        .map(|(n, _)| n.to_string())
        .collect();
    if !unconfined_c.is_empty() {
        v.push(format!(
            "seccompProfile ({} must not set securityContext.seccompProfile.type to \"Unconfined\")",
            subjects(&unconfined_c)
        ));
    }
    let sysctls: Vec<String> = psc
        .get("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(str::to_string)
        .collect();
    if !sysctls.is_empty() {
        v.push(format!("forbidden sysctls ({})", sysctls.join(", ")));
    }

    if level == Level::Restricted {
        let mut bad_volumes: Vec<(String, String)> = Vec::new();
        for vol in spec.get("volumes").and_then(Value::as_array).into_iter().flatten() {
            let name = vol.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            if let Some(ty) = vol.as_object().and_then(|o| o.keys().find(|k| *k != "name"))
                && !RESTRICTED_VOLUMES.contains(&ty.as_str())
                && ty != "hostPath"
            {
                bad_volumes.push((name, ty.clone()));
            }
        }
        if !bad_volumes.is_empty() {
            let names: Vec<String> = bad_volumes.iter().map(|(n, _)| n.clone()).collect();
            let types: Vec<String> = bad_volumes.iter().map(|(_, t)| t.clone()).collect();
            v.push(format!(
                "restricted volume types ({} {} uses restricted volume type {})",
                if names.len() == 1 { "volume" } else { "volumes" },
                quoted(&names),
                quoted(&types)
            ));
        }
        let escalation: Vec<String> = containers(spec)
            .filter(|(_, c)| {
                at(c, &["securityContext", "allowPrivilegeEscalation"]).and_then(Value::as_bool) != Some(false)
            })
            .map(|(n, _)| n.to_string())
            .collect();
        if !escalation.is_empty() {
            v.push(format!(
                "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
                subjects(&escalation)
            ));
        }
        let pod_non_root = at(&psc, &["runAsNonRoot"]).and_then(Value::as_bool);
        let not_non_root: Vec<String> = containers(spec)
            .filter(|(_, c)| match at(c, &["securityContext", "runAsNonRoot"]).and_then(Value::as_bool) {
                Some(b) => !b,
                None => pod_non_root != Some(true),
            })
            .map(|(n, _)| n.to_string())
            .collect();
        if pod_non_root == Some(false) || !not_non_root.is_empty() {
            v.push(format!(
                "runAsNonRoot != true (pod or {} must set securityContext.runAsNonRoot=true)",
                subjects(&not_non_root)
            ));
        }
        let root_user = at(&psc, &["runAsUser"]).and_then(Value::as_i64) == Some(0)
            || containers(spec)
                .any(|(_, c)| at(c, &["securityContext", "runAsUser"]).and_then(Value::as_i64) == Some(0));
        if root_user {
            v.push("runAsUser=0 (pod and containers must not set runAsUser=0)".into());
        }
        let pod_seccomp = at(&psc, &["seccompProfile", "type"]).and_then(Value::as_str);
        let no_seccomp: Vec<String> = containers(spec)
            .filter(|(_, c)| {
                let own = at(c, &["securityContext", "seccompProfile", "type"]).and_then(Value::as_str);
                !matches!(own.or(pod_seccomp), Some("RuntimeDefault" | "Localhost"))
            })
            .map(|(n, _)| n.to_string())
            .collect();
        if !no_seccomp.is_empty() {
            v.push(format!(
                "seccompProfile (pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
                subjects(&no_seccomp)
            ));
        }
        let no_drop: Vec<String> = containers(spec)
            .filter(|(_, c)| {
                !at(c, &["securityContext", "capabilities", "drop"])
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL")))
            })
            .map(|(n, _)| n.to_string())
            .collect();
        if !no_drop.is_empty() {
            v.push(format!(
                "unrestricted capabilities ({} must set securityContext.capabilities.drop=[\"ALL\"])",
                subjects(&no_drop)
            ));
        }
        let extra_caps: Vec<String> = containers(spec)
            .flat_map(|(_, c)| {
                at(c, &["securityContext", "capabilities", "add"]).and_then(Value::as_array).into_iter().flatten()
            })
            .filter_map(Value::as_str)
            .filter(|c| *c != "NET_BIND_SERVICE")
            .map(str::to_string)
            .collect();
        if !extra_caps.is_empty() && caps_ok_in_baseline(&extra_caps) {
            v.push(format!(
                "unrestricted capabilities (containers must not include {} in securityContext.capabilities.add)",
                quoted(&extra_caps)
            ));
        }
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(format!("violates PodSecurity \"{}:latest\": {}", level.name(), v.join(", ")))
    }
}

/// Restricted's own capability message is only needed for capabilities baseline allowed (the
/// others are reported by baseline's check already).
fn caps_ok_in_baseline(caps: &[String]) -> bool {
    caps.iter().all(|c| DEFAULT_CAPS.contains(&c.as_str()))
}

#[cfg(test)]
mod tests;
