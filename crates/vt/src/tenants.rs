//! The tenant commands: create, connect, disconnect, list, describe, delete, pause, resume.
//! They talk to the host cluster the manager watches: the embedded host of `vt server` (its
//! kubeconfig in the data directory) unless `--host-kubeconfig`/`VT_HOST_KUBECONFIG` or the
//! usual kubeconfig says otherwise.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use vt_manager::tenant::{
    EtcdSpec, Isolation, Network, StoreSpec, Tenant, TenantLimits, TenantSpec, check_name, host_namespace,
};

/// Where the host cluster is.
#[derive(clap::Args, Clone)]
pub struct HostArgs {
    /// Kubeconfig of the host cluster the manager watches.
    #[arg(long, env = "VT_HOST_KUBECONFIG", global = true)]
    host_kubeconfig: Option<PathBuf>,
    /// The data directory of an embedded `vt server` (its host kubeconfig is used by default);
    /// `$XDG_DATA_HOME/vt`, else `~/.local/share/vt`.
    #[arg(long, env = "VT_DATA_DIR", default_value_os_t = crate::paths::default_data_dir(), global = true)]
    pub(crate) data_dir: PathBuf,
}

/// Arguments of `vt create`.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// The tenant's name (a lowercase DNS label, at most 40 characters).
    name: String,
    /// Node pool for the tenant's pods (its own pool, named after it, by default).
    #[arg(long)]
    pool: Option<String>,
    /// RuntimeClass forced on the tenant's pods.
    #[arg(long, default_value = "kata")]
    runtime_class: String,
    /// Pod Security level of the tenant's host namespace.
    #[arg(long, default_value = "baseline", value_parser = ["restricted", "baseline", "privileged"])]
    pod_security: String,
    /// Extra node labels the tenant's pods must land on (`key=value`, repeatable).
    #[arg(long = "node-selector", value_name = "KEY=VALUE")]
    node_selector: Vec<String>,
    /// Store the tenant in etcd at these endpoints (repeatable) instead of SQLite.
    #[arg(long)]
    etcd: Vec<String>,
    /// Key prefix in etcd (`/vt/<tenant>/` by default).
    #[arg(long)]
    etcd_prefix: Option<String>,
    /// Quota of the tenant's host namespace (`pods=100`, `services.nodeports=2`, repeatable;
    /// node ports and load balancers are 0 unless given).
    #[arg(long, value_name = "RESOURCE=QUANTITY")]
    quota: Vec<String>,
    /// Cap on the tenant's open watches (the manager's default if unset).
    #[arg(long)]
    max_watches: Option<u32>,
    /// Cap on the tenant's open connections (the manager's default if unset).
    #[arg(long)]
    max_connections: Option<u32>,
    /// An address block the tenant's webhooks may call by URL (repeatable).
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    webhook_allow_cidr: Vec<String>,
    /// A loadBalancerClass the tenant's Services may use (repeatable).
    #[arg(long, value_name = "CLASS")]
    load_balancer_class: Vec<String>,
    /// A host name (or `*.suffix`) the tenant's Ingresses may claim beyond its own subdomain
    /// (repeatable).
    #[arg(long, value_name = "HOST")]
    ingress_host: Vec<String>,
    /// A host IngressClass the tenant may use (repeatable; the first is its default).
    #[arg(long, value_name = "CLASS")]
    ingress_class: Vec<String>,
    /// Sleep after this long without a request (`30m`, `1h30m`, `90s`); the next request
    /// wakes it. Default: never.
    #[arg(long, value_name = "DURATION", value_parser = parse_sleep_after_arg)]
    sleep_after: Option<String>,
    /// Return without waiting for the tenant to be ready.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the tenant to be ready.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    timeout: Duration,
}

/// Arguments of `vt connect`.
#[derive(clap::Args)]
pub struct ConnectArgs {
    /// The tenant.
    name: String,
    /// Print a standalone kubeconfig instead of merging it.
    #[arg(long)]
    print: bool,
    /// Run this command with the tenant's kubeconfig (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
}

/// Output formats of `vt list`.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

fn parse_cidr(s: &str) -> Result<String, String> {
    s.parse::<vt_net::Cidr>().map(|c| c.to_string()).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "ms" => Duration::from_millis(n),
        _ => return Err(format!("invalid duration {s:?} (use 30s, 2m, 500ms)")),
    })
}

/// The host client.
pub(crate) async fn host(args: &HostArgs) -> Result<Client, String> {
    let embedded = crate::paths::embedded_host_kubeconfig(&args.data_dir);
    let path = args.host_kubeconfig.clone().or_else(|| embedded.exists().then_some(embedded));
    let config = match &path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p).map_err(|e| format!("{}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| e.to_string())?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!(
                "no host cluster: start `vt server` (its embedded host keeps its kubeconfig in {}) or set --host-kubeconfig ({e})",
                args.data_dir.display()
            )
        })?,
    };
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Turns a host API error into a clear message.
pub(crate) fn explain(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message,
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            format!("cannot reach the vt manager's host cluster ({e}); is `vt server` running?")
        }
        other => other.to_string(),
    }
}

pub(crate) async fn get_tenant(api: &Api<Tenant>, name: &str) -> Result<Tenant, String> {
    match api.get_opt(name).await.map_err(explain)? {
        Some(t) => Ok(t),
        None => Err(format!("no tenant named {name:?} (see `vt list`)")),
    }
}

pub(crate) fn phase(t: &Tenant) -> String {
    t.status.as_ref().map(|s| s.phase.clone()).filter(|p| !p.is_empty()).unwrap_or_else(|| "Pending".into())
}

/// Waits until the tenant's phase is one of `phases`, showing a spinner on a terminal.
pub(crate) async fn wait_phase(
    api: &Api<Tenant>,
    name: &str,
    phases: &[&str],
    timeout: Duration,
    what: &str,
) -> Result<Tenant, String> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = Box::pin(watcher(api.clone(), cfg));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut frame = 0;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let result = loop {
        tokio::select! {
            _ = &mut deadline => break Err(format!("tenant {name:?} was not {what} within {}s", timeout.as_secs())),
            _ = tick.tick(), if tty => {
                eprint!("\r{} {what} tenant {name}… {:.1}s", frames[frame % frames.len()], started.elapsed().as_secs_f64());
                let _ = std::io::stderr().flush();
                frame += 1;
            }
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::Apply(t) | watcher::Event::InitApply(t))) => {
                    let p = phase(&t);
                    if phases.contains(&p.as_str()) {
                        break Ok(t);
                    }
                    if p == "Failed" {
                        let why = t.status.as_ref().map(|s| s.message.clone()).unwrap_or_default();
                        break Err(format!("tenant {name:?} failed: {why}"));
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) if phases.is_empty() => break Err(String::new()),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(format!("watching tenant {name:?}: {e}")),
                None => break Err("the watch ended".into()),
            },
        }
    };
    if tty {
        eprint!("\r\x1b[2K");
    }
    result
}

fn key_values(items: &[String], what: &str) -> Result<BTreeMap<String, String>, String> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("invalid {what} {kv:?}: use KEY=VALUE"))
        })
        .collect()
}

fn parse_sleep_after_arg(s: &str) -> Result<String, String> {
    vt_manager::tenant::parse_sleep_after(s).map(|_| s.trim().to_string())
}

/// `vt create`.
pub async fn create(host_args: &HostArgs, args: CreateArgs) -> Result<(), String> {
    check_name(&args.name)?;
    let tenant = Tenant::new(
        &args.name,
        TenantSpec {
            isolation: Isolation {
                node_pool: args.pool.clone(),
                node_selector: key_values(&args.node_selector, "node selector")?,
                tolerations: Vec::new(),
                runtime_class_name: Some(args.runtime_class.clone()),
                pod_security: Some(args.pod_security.clone()),
            },
            store: StoreSpec {
                etcd: (!args.etcd.is_empty())
                    .then(|| EtcdSpec { endpoints: args.etcd.clone(), prefix: args.etcd_prefix.clone() }),
            },
            quota: key_values(&args.quota, "quota")?,
            paused: false,
            sleep_after: args.sleep_after.clone(),
            limits: TenantLimits {
                max_watches: args.max_watches,
                max_connections: args.max_connections,
                ..Default::default()
            },
            network: Network {
                webhook_allow_cidrs: args.webhook_allow_cidr.clone(),
                load_balancer_classes: args.load_balancer_class.clone(),
                ingress_hosts: args.ingress_host.clone(),
                ingress_classes: args.ingress_class.clone(),
                default_ingress_class: args.ingress_class.first().cloned(),
                ..Default::default()
            },
        },
    );
    let client = host(host_args).await?;
    let api: Api<Tenant> = Api::all(client);
    let started = Instant::now();
    match api.create(&PostParams::default(), &tenant).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => return Err(format!("tenant {:?} already exists", args.name)),
        Err(e) => return Err(explain(e)),
    }
    if args.no_wait {
        println!("tenant {} created", args.name);
        return Ok(());
    }
    wait_phase(&api, &args.name, &["Ready"], args.timeout, "starting").await?;
    println!(
        "tenant {} is ready ({} ms)\n  connect:  vt connect {}\n  or:       vt connect {} --print > {}.kubeconfig",
        args.name,
        started.elapsed().as_millis(),
        args.name,
        args.name,
        args.name
    );
    Ok(())
}

/// The tenant's admin kubeconfig (YAML).
async fn tenant_kubeconfig(client: &Client, name: &str) -> Result<String, String> {
    let api: Api<Tenant> = Api::all(client.clone());
    let t = get_tenant(&api, name).await?;
    let p = phase(&t);
    // A sleeping tenant wakes on its first request.
    if p != "Ready" && p != "Sleeping" {
        return Err(format!("tenant {name:?} is {p}, not Ready"));
    }
    let (ns, secret) = t
        .status
        .as_ref()
        .and_then(|s| s.kubeconfig_secret.clone())
        .map(|r| (r.namespace, r.name))
        .unwrap_or_else(|| (host_namespace(name), vt_manager::reconcile::KUBECONFIG_SECRET.into()));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let s = secrets.get(&secret).await.map_err(explain)?;
    let bytes = s.data.and_then(|d| d.get("kubeconfig").cloned()).ok_or("the tenant's kubeconfig secret is empty")?;
    String::from_utf8(bytes.0).map_err(|_| "the tenant's kubeconfig is not text".to_string())
}

/// The user's kubeconfig file (the first of `$KUBECONFIG`, else `~/.kube/config`).
fn user_kubeconfig() -> PathBuf {
    if let Some(first) = std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).next())
        && !first.as_os_str().is_empty()
    {
        return first;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".kube").join("config")
}

fn previous_context_file(kubeconfig: &Path) -> PathBuf {
    kubeconfig.with_file_name(format!(
        "{}.vt-previous-context",
        kubeconfig.file_name().and_then(|n| n.to_str()).unwrap_or("config")
    ))
}

fn read_yaml(path: &Path) -> Result<Value, String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        _ => Ok(
            json!({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": [], "preferences": {}}),
        ),
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Merges a tenant kubeconfig into `target` as context `vt-<name>` and selects it.
fn merge(target: &Path, tenant_kc: &str, name: &str) -> Result<(), String> {
    let mut cfg = read_yaml(target)?;
    let incoming: Value = serde_saphyr::from_str(tenant_kc).map_err(|e| e.to_string())?;
    let entry = format!("vt-{name}");
    let cluster = incoming.pointer("/clusters/0/cluster").cloned().unwrap_or(Value::Null);
    let user = incoming.pointer("/users/0/user").cloned().unwrap_or(Value::Null);
    for (list, value) in [
        ("clusters", json!({"name": entry, "cluster": cluster})),
        ("users", json!({"name": entry, "user": user})),
        ("contexts", json!({"name": entry, "context": {"cluster": entry, "user": entry}})),
    ] {
        if !cfg.get(list).is_some_and(Value::is_array) {
            cfg[list] = json!([]);
        }
        if let Some(a) = cfg[list].as_array_mut() {
            a.retain(|e| e.get("name").and_then(Value::as_str) != Some(entry.as_str()));
            a.push(value);
        }
    }
    let current = cfg.get("current-context").and_then(Value::as_str).unwrap_or("").to_string();
    if !current.is_empty() && !current.starts_with("vt-") {
        write_private(&previous_context_file(target), &current)?;
    }
    cfg["current-context"] = json!(entry);
    let text = serde_saphyr::to_string(&cfg).map_err(|e| e.to_string())?;
    write_private(target, &text)
}

/// `vt connect`.
pub async fn connect(host_args: &HostArgs, args: ConnectArgs) -> Result<std::process::ExitCode, String> {
    let client = host(host_args).await?;
    let kc = tenant_kubeconfig(&client, &args.name).await?;
    if args.print {
        print!("{kc}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Some((program, rest)) = args.command.split_first() {
        let dir = std::env::temp_dir().join(format!("vt-connect-{}-{}", args.name, std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join("kubeconfig");
        write_private(&path, &kc)?;
        let status = std::process::Command::new(program)
            .args(rest)
            .env("KUBECONFIG", &path)
            .status()
            .map_err(|e| format!("{program}: {e}"));
        let _ = std::fs::remove_dir_all(&dir);
        let code = status?.code().unwrap_or(1);
        return Ok(std::process::ExitCode::from(code.clamp(0, 255) as u8));
    }
    let target = user_kubeconfig();
    merge(&target, &kc, &args.name)?;
    println!("Switched to context \"vt-{}\" in {}.", args.name, target.display());
    Ok(std::process::ExitCode::SUCCESS)
}

/// `vt disconnect`: back to the context that was current before `vt connect`.
pub fn disconnect() -> Result<(), String> {
    let target = user_kubeconfig();
    let mut cfg = read_yaml(&target)?;
    let current = cfg.get("current-context").and_then(Value::as_str).unwrap_or("").to_string();
    if !current.starts_with("vt-") {
        println!("not connected to a vt tenant (current context {current:?})");
        return Ok(());
    }
    let prev_file = previous_context_file(&target);
    let previous = std::fs::read_to_string(&prev_file).unwrap_or_default().trim().to_string();
    cfg["current-context"] = json!(previous);
    write_private(&target, &serde_saphyr::to_string(&cfg).map_err(|e| e.to_string())?)?;
    let _ = std::fs::remove_file(prev_file);
    if previous.is_empty() {
        println!("Disconnected from \"{current}\"; no current context.");
    } else {
        println!("Disconnected from \"{current}\"; switched to context \"{previous}\".");
    }
    Ok(())
}

fn age(t: &Tenant) -> String {
    let Some(created) = t.metadata.creation_timestamp.as_ref() else { return "<unknown>".into() };
    let secs = (jiff::Timestamp::now().as_second() - created.0.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// `vt list`.
pub async fn list(host_args: &HostArgs, format: Format) -> Result<(), String> {
    let client = host(host_args).await?;
    let api: Api<Tenant> = Api::all(client);
    let tenants = api.list(&Default::default()).await.map_err(explain)?.items;
    match format {
        Format::Json | Format::Yaml => {
            let items: Vec<Value> = tenants
                .iter()
                .map(|t| {
                    json!({"name": t.name_any(), "status": phase(t), "age": age(t),
                        "pods": t.status.as_ref().and_then(|s| s.pods).unwrap_or(0),
                        "endpoint": t.status.as_ref().map(|s| s.endpoint.clone()).unwrap_or_default(),
                        "spec": t.spec})
                })
                .collect();
            let out = json!({"tenants": items});
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                print!("{}", serde_saphyr::to_string(&out).unwrap_or_default());
            }
        }
        Format::Table => {
            if tenants.is_empty() {
                eprintln!("No tenants. Create one with `vt create <name>`.");
                return Ok(());
            }
            // The owner replica, when several managers share the tenants.
            let owners = tenants.iter().any(|t| t.status.as_ref().is_some_and(|s| s.owner.is_some()));
            let mut header = vec!["NAME", "STATUS", "AGE", "PODS", "ENDPOINT"];
            if owners {
                header.push("OWNER");
            }
            let rows: Vec<Vec<String>> = tenants
                .iter()
                .map(|t| {
                    let mut row = vec![
                        t.name_any(),
                        phase(t),
                        age(t),
                        t.status.as_ref().and_then(|s| s.pods).unwrap_or(0).to_string(),
                        t.status.as_ref().map(|s| s.endpoint.clone()).unwrap_or_default(),
                    ];
                    if owners {
                        row.push(t.status.as_ref().and_then(|s| s.owner.clone()).unwrap_or_else(|| "<none>".into()));
                    }
                    row
                })
                .collect();
            let widths: Vec<usize> = (0..header.len())
                .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
                .collect();
            let line = |cells: &[&str]| {
                cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect::<Vec<_>>().join("   ")
            };
            println!("{}", line(&header).trim_end());
            for r in &rows {
                println!("{}", line(&r.iter().map(String::as_str).collect::<Vec<_>>()).trim_end());
            }
        }
    }
    Ok(())
}

/// `vt describe`.
pub async fn describe(host_args: &HostArgs, name: &str) -> Result<(), String> {
    let client = host(host_args).await?;
    let api: Api<Tenant> = Api::all(client);
    let t = get_tenant(&api, name).await?;
    let status = t.status.clone().unwrap_or_default();
    println!("Name:            {}", t.name_any());
    println!("Status:          {}", phase(&t));
    if !status.message.is_empty() {
        println!("Message:         {}", status.message);
    }
    println!("Age:             {}", age(&t));
    println!("Endpoint:        {}", status.endpoint);
    if let Some(owner) = &status.owner {
        println!("Owner replica:   {owner}");
    }
    println!("Host namespace:  {}", host_namespace(name));
    println!("Node pool:       {}", t.spec.isolation.pool(name));
    println!("Runtime class:   {}", t.spec.isolation.runtime_class());
    println!("Pod security:    {}", t.spec.isolation.security_level());
    match &t.spec.store.etcd {
        Some(e) => println!(
            "Store:           etcd {} (prefix {})",
            e.endpoints.join(","),
            e.prefix.clone().unwrap_or_else(|| format!("/vt/{name}/"))
        ),
        None => println!("Store:           SQLite (embedded)"),
    }
    if let Some(dns) = &status.dns {
        println!("DNS:             {} ({} records in cluster.local)", dns.address, dns.records);
    }
    println!("Pods:            {}", status.pods.unwrap_or(0));
    println!("Objects:         {}", status.objects.unwrap_or(0));
    if !t.spec.quota.is_empty() {
        println!(
            "Quota:           {}",
            t.spec.quota.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
        );
    }
    for c in &status.conditions {
        println!("Condition:       {}={} ({}) since {}", c.type_, c.status, c.reason, c.last_transition_time);
    }
    Ok(())
}

/// `vt delete`.
pub async fn delete(host_args: &HostArgs, name: &str, wait: bool, timeout: Duration) -> Result<(), String> {
    let client = host(host_args).await?;
    let api: Api<Tenant> = Api::all(client);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Err(format!("no tenant named {name:?} (see `vt list`)")),
        Err(e) => return Err(explain(e)),
    }
    if wait {
        let deadline = Instant::now() + timeout;
        while api.get_opt(name).await.map_err(explain)?.is_some() {
            if Instant::now() > deadline {
                return Err(format!("tenant {name:?} was not deleted within {}s", timeout.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("tenant {name} deleted");
    Ok(())
}
