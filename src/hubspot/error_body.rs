//! HubSpot's error JSON: the shape of every answer hubgate gives in HubSpot's place, so
//! the SDKs' error handlers (which read `category`, `policyName`, `correlationId`) work
//! unchanged.

use serde::Serialize;

/// One error answer's fields; `policy_name` marks a refusal standing in for HubSpot's 429.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) message: &'a str,
    pub(crate) category: &'static str,
    pub(crate) correlation_id: &'a str,
    pub(crate) policy_name: Option<&'static str>,
}

impl ErrorBody<'_> {
    /// `{"status":"error","message":…,"errorType":"RATE_LIMIT"?,"category":…,
    /// "correlationId":…,"policyName":…?}`; `errorType` comes with `policyName`, as in
    /// HubSpot's own 429s.
    pub(crate) fn to_json(self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Json<'a> {
            status: &'static str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            error_type: Option<&'static str>,
            category: &'static str,
            correlation_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            policy_name: Option<&'static str>,
        }
        let json = Json {
            status: "error",
            message: self.message,
            error_type: self.policy_name.map(|_| "RATE_LIMIT"),
            category: self.category,
            correlation_id: self.correlation_id,
            policy_name: self.policy_name,
        };
        serde_json::to_vec(&json).unwrap_or_else(|_| b"{}".to_vec())
    }
}
