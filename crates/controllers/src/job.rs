//! The Job controller: runs pods until `completions` succeed (or, without completions, until one
//! succeeds and the rest finish), at most `parallelism` at a time; `Indexed` Jobs give each pod
//! its completion index (annotation, label, hostname, `JOB_COMPLETION_INDEX`). Failures are
//! retried with kube's exponential back-off (10 s doubling, capped at 6 min) until
//! `backoffLimit`; `activeDeadlineSeconds` and `suspend` are honoured; conditions are kube's
//! (`SuccessCriteriaMet` then `Complete`, `FailureTarget` then `Failed`, `Suspended`). Finished
//! Jobs with `ttlSecondsAfterFinished` are deleted (foreground) when it expires, as kube's
//! TTL-after-finished controller does.
//!
//! Counting: kube tracks finished pods with the `batch.kubernetes.io/job-tracking` finalizer;
//! vt counts the finished pods it sees and never lets `succeeded`/`failed` go down, so a
//! finished pod deleted by hand is still counted; indexes are tracked in `completedIndexes`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::util::{self, Error, Result};

/// The completion index of an Indexed Job's pod.
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";

struct Ctx {
    client: Client,
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client) {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    Controller::new(jobs, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .run(reconcile, util::retry, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

/// Whether the Job has finished, and when.
pub fn finished(job: &Job) -> Option<(bool, jiff::Timestamp)> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True").map(|c| {
        let at = c.last_transition_time.as_ref().map(|t| t.0).unwrap_or_else(jiff::Timestamp::now);
        (c.type_ == "Complete", at)
    })
}

/// Parses `completedIndexes` (`1,3-5`).
fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b.min(a.saturating_add(1_000_000)));
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Formats indexes as kube does: a run of two or more consecutive indexes as a range.
fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut it = set.iter().peekable();
    while let Some(&start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&&(end + 1)) {
            end += 1;
            it.next();
        }
        parts.push(if end > start { format!("{start}-{end}") } else { start.to_string() });
    }
    parts.join(",")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations().get(INDEX).or_else(|| pod.labels().get(INDEX)).and_then(|i| i.parse().ok())
}

fn finish_time(pod: &Pod) -> Option<jiff::Timestamp> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0)).max()
}

async fn delete_pods(api: &Api<Pod>, pods: &[&Pod]) -> Result<()> {
    for p in pods {
        util::delete(api, &p.name_any(), &DeleteParams::background()).await?;
    }
    Ok(())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = job.spec.clone().ok_or_else(|| Error::Invalid("no spec".into()))?;
    let now = jiff::Timestamp::now();

    // A finished Job: only its time to live remains.
    if let Some((_, at)) = finished(&job) {
        let Some(ttl) = spec.ttl_seconds_after_finished else { return Ok(Action::await_change()) };
        let expires = at + jiff::SignedDuration::from_secs(ttl.into());
        if expires > now {
            return Ok(Action::requeue(now.duration_until(expires).unsigned_abs() + Duration::from_millis(50)));
        }
        tracing::debug!(job = %name, "time to live after finishing expired; deleting");
        match jobs.delete(&name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(e) if util::gone(&e) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }

    let owner = util::controller_ref(job.as_ref());
    let selector = spec.selector.clone().unwrap_or_default();
    let pods = crate::replicaset::owned_pods(&ctx.client, &ns, &owner.uid, &selector, Some(&owner)).await?;
    let active: Vec<&Pod> = pods.iter().filter(|p| !util::deleting(p) && !util::terminal(p)).collect();
    let terminating = pods.iter().filter(|p| util::deleting(p) && !util::terminal(p)).count();
    let status = job.status.clone().unwrap_or_default();
    let mut conds: Vec<Value> = vt_apiserver::object::to_value(status.conditions.clone().unwrap_or_default())
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let succeeded_pods: Vec<&Pod> = pods.iter().filter(|p| util::phase(p) == "Succeeded").collect();
    let failed_pods: Vec<&Pod> = pods.iter().filter(|p| util::phase(p) == "Failed").collect();
    let succeeded = status.succeeded.unwrap_or(0).max(succeeded_pods.len() as i32);
    let failed = status.failed.unwrap_or(0).max(failed_pods.len() as i32);
    let completions = spec.completions;
    let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
    if indexed {
        let limit = completions.unwrap_or(0);
        completed.extend(succeeded_pods.iter().filter_map(|p| index_of(p)).filter(|i| (0..limit).contains(i)));
    }
    let mut patch = json!({});
    let mut requeue: Option<Duration> = None;
    let mut wake = |d: Duration| requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));

    if spec.suspend == Some(true) {
        delete_pods(&pod_api, &active).await?;
        util::set_condition(
            &mut conds,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            json!({"lastProbeTime": util::now()}),
        );
        patch["startTime"] = Value::Null;
        patch["active"] = json!(0);
    } else {
        if conds.iter().any(|c| c["type"] == "Suspended" && c["status"] == "True") {
            util::set_condition(
                &mut conds,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
                json!({"lastProbeTime": util::now()}),
            );
        }
        let start = match status.start_time.as_ref() {
            Some(t) => t.0,
            None => {
                patch["startTime"] = json!(util::now());
                now
            }
        };
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let deadline = spec.active_deadline_seconds.map(|s| start + jiff::SignedDuration::from_secs(s));
        let success = if indexed {
            completed.len() as i32 >= completions.unwrap_or(0)
        } else {
            match completions {
                Some(c) => succeeded >= c,
                None => succeeded > 0 && active.is_empty(),
            }
        };
        let failure = if success {
            None
        } else if failed > backoff_limit {
            Some(("BackoffLimitExceeded", "Job has reached the specified backoff limit"))
        } else if deadline.is_some_and(|d| d <= now) {
            Some(("DeadlineExceeded", "Job was active longer than specified deadline"))
        } else {
            None
        };
        if success {
            let extra = json!({"lastProbeTime": util::now()});
            util::set_condition(
                &mut conds,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                extra.clone(),
            );
            util::set_condition(
                &mut conds,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                extra,
            );
            patch["completionTime"] = json!(util::now());
            delete_pods(&pod_api, &active).await?;
        } else if let Some((reason, message)) = failure {
            let extra = json!({"lastProbeTime": util::now()});
            util::set_condition(&mut conds, "FailureTarget", "True", reason, message, extra.clone());
            util::set_condition(&mut conds, "Failed", "True", reason, message, extra);
            delete_pods(&pod_api, &active).await?;
        } else {
            if let Some(d) = deadline {
                wake(now.duration_until(d).unsigned_abs() + Duration::from_millis(50));
            }
            // Back off after failures: 10 s, doubling, at most 6 min, from the last failure.
            let last_failure = failed_pods.iter().filter_map(|p| finish_time(p)).max();
            let backoff = if failed > 0 {
                let d =
                    Duration::from_secs(10).saturating_mul(1 << (failed - 1).clamp(0, 6)).min(Duration::from_secs(360));
                last_failure.map(|t| t + jiff::SignedDuration::try_from(d).unwrap_or_default()).filter(|t| *t > now)
            } else {
                None
            };
            if let Some(until) = backoff {
                wake(now.duration_until(until).unsigned_abs() + Duration::from_millis(50));
            } else {
                let parallelism = spec.parallelism.unwrap_or(1).max(0);
                let template = spec.template.clone();
                if indexed {
                    let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                    let missing: Vec<i32> = (0..completions.unwrap_or(0))
                        .filter(|i| !completed.contains(i) && !running.contains(i))
                        .take((parallelism as usize).saturating_sub(active.len()))
                        .collect();
                    for i in missing {
                        let mut pod = util::pod_from_template(Some(&template), &ns, &owner);
                        pod.metadata.generate_name = Some(format!("{name}-{i}-"));
                        pod.metadata.annotations.get_or_insert_default().insert(INDEX.into(), i.to_string());
                        pod.metadata.labels.get_or_insert_default().insert(INDEX.into(), i.to_string());
                        if let Some(ps) = pod.spec.as_mut() {
                            ps.hostname = Some(format!("{name}-{i}"));
                            for c in ps.containers.iter_mut().chain(ps.init_containers.iter_mut().flatten()) {
                                let env = c.env.get_or_insert_default();
                                if !env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX") {
                                    env.push(vt_apiserver::object::from_value(json!({"name": "JOB_COMPLETION_INDEX",
                                        "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.labels['{INDEX}']")}}}))
                                        .unwrap_or_default());
                                }
                            }
                        }
                        util::create_pod(&pod_api, &pod, &format!("job {name}")).await?;
                    }
                } else {
                    let want = match completions {
                        Some(c) => parallelism.min(c - succeeded).max(0),
                        None if succeeded > 0 => 0,
                        None => parallelism,
                    } as usize;
                    if active.len() < want {
                        let mut pod = util::pod_from_template(Some(&template), &ns, &owner);
                        pod.metadata.generate_name = Some(format!("{name}-"));
                        for _ in active.len()..want {
                            util::create_pod(&pod_api, &pod, &format!("job {name}")).await?;
                        }
                        pod.metadata.generate_name = None;
                    } else if active.len() > want && completions.is_some() {
                        // Parallelism lowered: the newest go first.
                        let mut extra = active.clone();
                        extra.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)));
                        delete_pods(&pod_api, &extra[..active.len() - want]).await?;
                    }
                }
            }
        }
        patch["active"] = json!(if finished_now(&conds) { 0 } else { active.len() });
    }
    patch["ready"] = json!(active.iter().filter(|p| util::ready(p)).count());
    patch["succeeded"] = json!(succeeded);
    patch["failed"] = json!(failed);
    patch["terminating"] = json!(terminating);
    if indexed {
        patch["completedIndexes"] = json!(format_indexes(&completed));
    }
    patch["conditions"] = json!(conds);
    let current = vt_apiserver::object::to_value(&status).unwrap_or_default();
    let changed = patch.as_object().into_iter().flatten().any(|(k, v)| {
        let cur = current.get(k).cloned().unwrap_or(Value::Null);
        match (k.as_str(), v) {
            ("startTime" | "completionTime", Value::Null) => !cur.is_null(),
            ("startTime" | "completionTime", _) => cur.is_null(),
            ("conditions", Value::Array(a)) if a.is_empty() => !cur.as_array().is_none_or(Vec::is_empty),
            (_, v) if v.as_i64() == Some(0) => cur.as_i64().unwrap_or(0) != 0,
            _ => cur != *v,
        }
    });
    if changed {
        if patch["conditions"].as_array().is_some_and(Vec::is_empty) {
            patch.as_object_mut().map(|m| m.remove("conditions"));
        }
        jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": patch}))).await?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

fn finished_now(conds: &[Value]) -> bool {
    conds.iter().any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_round_trip() {
        let s = parse_indexes("0,2-4,7");
        assert_eq!(s, BTreeSet::from([0, 2, 3, 4, 7]));
        assert_eq!(format_indexes(&s), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::from([1, 2])), "1-2");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert!(parse_indexes("x,-,3-a").is_empty());
    }
}
