//! [`HttpGateway`]: the shop's client of the gateway service.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;

use super::{Authorization, AuthorizationRequest, GatewayError, PaymentGateway};
use crate::http_client::{request_with_headers, ClientError};

/// Calls the gateway service at an address, with the idempotency key as a header.
#[derive(Clone, Debug)]
pub struct HttpGateway {
    addr: SocketAddr,
    timeout: Duration,
}

impl HttpGateway {
    /// A client of the service at `addr`, waiting up to 5 s for an answer.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            timeout: Duration::from_secs(5),
        }
    }

    /// Waits up to `timeout` for an answer (a late answer counts as unavailable; asking
    /// again with the same key is safe).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl HttpGateway {
    /// Sends `POST path` with `body` and `key` as the idempotency key; the answer's body, or
    /// the gateway's error: 4xx (but 408 and 429) is a refusal, anything else that is not a
    /// success leaves the outcome open (unavailable: ask again with the same key).
    async fn post(
        &self,
        path: &str,
        key: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, GatewayError> {
        let answer = request_with_headers(
            self.addr,
            "POST",
            path,
            Some(body),
            &[("Idempotency-Key", key)],
            self.timeout,
        )
        .await;
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(ClientError::BadRequest(reason)) => return Err(GatewayError::Refused(reason)),
            Err(other) => return Err(GatewayError::Unavailable(other.to_string())),
        };
        let reason = || {
            body["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned()
        };
        match status {
            200 | 201 => Ok(body),
            400..=499 if status != 408 && status != 429 => Err(GatewayError::Refused(reason())),
            _ => Err(GatewayError::Unavailable(format!("{status}: {}", reason()))),
        }
    }
}

#[async_trait]
impl PaymentGateway for HttpGateway {
    async fn authorize(
        &self,
        key: &str,
        request: &AuthorizationRequest,
    ) -> Result<Authorization, GatewayError> {
        let body = serde_json::to_value(request)
            .map_err(|e| GatewayError::Refused(format!("the request does not encode: {e}")))?;
        let answer = self.post("/authorizations", key, &body).await?;
        serde_json::from_value(answer.clone())
            .map_err(|e| GatewayError::Unavailable(format!("unreadable answer {answer}: {e}")))
    }

    async fn void(&self, key: &str) -> Result<bool, GatewayError> {
        let answer = self.post("/voids", key, &serde_json::json!({})).await?;
        answer["released"]
            .as_bool()
            .ok_or_else(|| GatewayError::Unavailable(format!("unreadable answer {answer}")))
    }
}
