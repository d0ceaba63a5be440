//! The store conformance suite: the same test code, run against every backend.
//!
//! Each case in `suite.rs` is instantiated once per backend by the `conformance!` macro below:
//! SQLite on a temporary file, and etcd on a real etcd server started by the test (shared by
//! the cases of this binary, each under its own prefix; compaction cases get a dedicated
//! server because etcd compaction is cluster-wide).

mod fixture;
mod suite;

macro_rules! conformance {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let fx = crate::fixture::$backend(stringify!($case)).await;
                    crate::suite::$case(&fx).await;
                }
            )*
        }
    };
}

macro_rules! all_backends {
    ($($case:ident),* $(,)?) => {
        conformance!(sqlite: $($case),*);
        conformance!(etcd: $($case),*);
    };
}

all_backends!(
    crud_round_trip,
    guarded_writes_fail_without_side_effects,
    concurrent_updaters_one_winner_per_revision,
    watch_delivers_every_change_in_order,
    watch_resumes_from_any_retained_revision,
    prefixes_side_by_side_are_isolated,
    list_snapshot_is_consistent_under_writes,
    pagination_over_10000_keys,
    compaction_fails_old_reads_and_keeps_new,
    large_values_round_trip,
    binary_keys_and_values,
    expiring_keys_are_deleted_and_watched,
    future_revisions_are_refused,
);
