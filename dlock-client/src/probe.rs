//! Asking servers how they see the cluster, without a session
//! ([`ClientBuilder::probe`](crate::ClientBuilder::probe)).

use std::sync::Arc;
use std::time::Duration;

use dlock_proto::status::ClusterView;
use dlock_proto::{ClientMessage, FrameCodec, PROTOCOL_VERSION, Probe, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::driver::open;
use crate::error::{Error, Result};
use crate::tls::Tls;

/// One endpoint's answer to a probe.
#[derive(Debug, Clone)]
pub struct Probed {
    /// The endpoint asked (as given to the builder).
    pub endpoint: String,
    /// The cluster as that server sees it (`Ok(None)`: it runs alone), or why it did not
    /// say: it could not be reached, did not answer within the connect timeout, or refused
    /// ([`Error::Refused`], for its protocol version or the token).
    pub answer: Result<Option<ClusterView>>,
}

/// Asks `endpoint` for its view, within `timeout`.
pub(crate) async fn probe(
    endpoint: String,
    tls: Option<Tls>,
    token: Option<String>,
    timeout: Duration,
) -> Probed {
    let ask = async {
        let (read, write) = open(endpoint.clone(), tls)
            .await
            .map_err(|e| Error::Connect(Arc::new(e)))?;
        let mut write =
            FramedWrite::new(write, FrameCodec::<ServerMessage, ClientMessage>::default());
        let probe = Probe {
            protocol_version: PROTOCOL_VERSION,
            token,
        };
        write
            .send(ClientMessage::Probe(probe))
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let mut read = FramedRead::new(read, FrameCodec::<ServerMessage, ClientMessage>::default());
        match read.next().await {
            Some(Ok(Ok(ServerMessage::Probed(view)))) => Ok(view),
            Some(Ok(Ok(ServerMessage::Refused(why)))) => Err(Error::Refused(why)),
            Some(Ok(Ok(other))) => Err(Error::Protocol(format!(
                "unexpected answer to a probe: {other:?}"
            ))),
            Some(Ok(Err(malformed))) => Err(Error::Protocol(malformed.to_string())),
            Some(Err(e)) => Err(Error::Protocol(e.to_string())),
            None => Err(Error::Disconnected),
        }
    };
    let answer = tokio::time::timeout(timeout, ask)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Connect(Arc::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer to the probe in time",
            ))))
        });
    Probed { endpoint, answer }
}
