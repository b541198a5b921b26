//! AWS's JSON protocols (awsJson1.0 and awsJson1.1): `X-Amz-Target: Service.Operation`, a
//! JSON body in, a JSON body out, errors as `{"__type", "message"}`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// An error answer in AWS's JSON shape.
#[derive(Debug)]
pub struct JsonError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl JsonError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        JsonError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        JsonError::new("ValidationException", message)
    }
}

pub fn answer(version: &str, body: &Value) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            format!("application/x-amz-json-{version}"),
        )],
        body.to_string(),
    )
        .into_response()
}

pub fn error(version: &str, e: &JsonError) -> Response {
    let body = serde_json::json!({"__type": e.code, "message": e.message});
    (
        e.status,
        [
            (
                header::CONTENT_TYPE,
                format!("application/x-amz-json-{version}"),
            ),
            (
                header::HeaderName::from_static("x-amzn-errortype"),
                e.code.to_owned(),
            ),
        ],
        body.to_string(),
    )
        .into_response()
}

/// A member of a request: a string that must be there.
pub fn required<'a>(input: &'a Value, name: &str) -> Result<&'a str, JsonError> {
    input.get(name).and_then(Value::as_str).ok_or_else(|| {
        JsonError::validation(format!(
            "1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

/// A member that is a list of strings (absent: empty).
pub fn strings(input: &Value, name: &str) -> Result<Vec<String>, JsonError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    JsonError::validation(format!("{name} must be a list of strings"))
                })
            })
            .collect(),
        Some(_) => Err(JsonError::validation(format!(
            "{name} must be a list of strings"
        ))),
    }
}

/// A random identifier in UUID form.
pub fn uuid(rng: &mut impl rand::Rng) -> String {
    let a: u128 = rng.gen();
    let h = format!("{a:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}
