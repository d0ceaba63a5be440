//! A small gRPC client for the parts of etcd's v3 API the backend uses: ranges, transactions,
//! compaction, lease grants and watches, over tonic's channel with prost's codec.

use std::time::Duration;

use futures::StreamExt;
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};
use tonic_prost::ProstCodec;

use super::wire::*;

/// The largest gRPC message the client accepts (values may be a few MiB; etcd's own
/// `--max-request-bytes` bounds what can be written).
const MAX_MESSAGE: usize = 64 << 20;

/// A connection (balanced over the cluster's endpoints) to one etcd cluster. Cloning is cheap.
#[derive(Clone)]
pub(crate) struct Client {
    grpc: Grpc<Channel>,
}

/// What a call failed with: etcd's (or the transport's) gRPC status.
pub(crate) type CallResult<T> = std::result::Result<T, Status>;

impl Client {
    /// A client for `endpoints` (URLs such as `http://127.0.0.1:2379`); connections are made
    /// on first use, each request bounded by `request_timeout`.
    pub(crate) fn new(endpoints: &[String], connect_timeout: Duration, request_timeout: Duration) -> CallResult<Self> {
        if endpoints.is_empty() {
            return Err(Status::invalid_argument("no etcd endpoints"));
        }
        let mut list = Vec::with_capacity(endpoints.len());
        for url in endpoints {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| Status::invalid_argument(format!("invalid etcd endpoint {url:?}: {e}")))?
                .connect_timeout(connect_timeout)
                .timeout(request_timeout)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            list.push(endpoint);
        }
        let channel = Channel::balance_list(list.into_iter());
        let grpc = Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
        Ok(Client { grpc })
    }

    async fn unary<Req, Resp>(&self, path: &'static str, req: Req) -> CallResult<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready().await.map_err(|e| Status::new(Code::Unavailable, e.to_string()))?;
        let codec = ProstCodec::<Req, Resp>::default();
        Ok(grpc.unary(tonic::Request::new(req), PathAndQuery::from_static(path), codec).await?.into_inner())
    }

    /// `KV/Range`.
    pub(crate) async fn range(&self, req: RangeRequest) -> CallResult<RangeResponse> {
        self.unary("/etcdserverpb.KV/Range", req).await
    }

    /// `KV/Txn`.
    pub(crate) async fn txn(&self, req: TxnRequest) -> CallResult<TxnResponse> {
        self.unary("/etcdserverpb.KV/Txn", req).await
    }

    /// `KV/Compact`.
    pub(crate) async fn compact(&self, req: CompactionRequest) -> CallResult<CompactionResponse> {
        self.unary("/etcdserverpb.KV/Compact", req).await
    }

    /// `Lease/LeaseGrant`.
    pub(crate) async fn lease_grant(&self, req: LeaseGrantRequest) -> CallResult<LeaseGrantResponse> {
        self.unary("/etcdserverpb.Lease/LeaseGrant", req).await
    }

    /// `Watch/Watch` with one creation request; the watch lasts as long as the returned
    /// stream (dropping it closes the gRPC stream, which cancels the watch on the server).
    pub(crate) async fn watch(&self, create: WatchCreateRequest) -> CallResult<Streaming<WatchResponse>> {
        let mut grpc = self.grpc.clone();
        grpc.ready().await.map_err(|e| Status::new(Code::Unavailable, e.to_string()))?;
        let first = WatchRequest { create_request: Some(create) };
        // The request side stays open (pending) so etcd keeps the watch.
        let requests = futures::stream::once(async move { first }).chain(futures::stream::pending());
        let codec = ProstCodec::<WatchRequest, WatchResponse>::default();
        let resp = grpc
            .streaming(tonic::Request::new(requests), PathAndQuery::from_static("/etcdserverpb.Watch/Watch"), codec)
            .await?;
        Ok(resp.into_inner())
    }
}
