//! CloudWatch's three protocols, all carried to and from one JSON-shaped value:
//!
//! - Smithy RPC v2 CBOR (`POST /service/GraniteServiceVersion20100801/operation/<Op>`,
//!   `smithy-protocol: rpc-v2-cbor`), which aws-sdk-cloudwatch and boto3 send today;
//!   timestamps are CBOR tag 1 (epoch seconds);
//! - awsJson1.0 (`X-Amz-Target: GraniteServiceVersion20100801.<Op>`), timestamps as epoch
//!   seconds;
//! - awsQuery (form `Action=<Op>&Version=2010-08-01`, lists as `Name.member.N`), answered in
//!   XML with ISO 8601 timestamps.
//!
//! Errors carry `x-amzn-query-error: <Code>;Sender` as CloudWatch's `awsQueryCompatible`
//! trait asks, so every SDK sees the same error codes.

use crate::aws::protocol::json::JsonError;
use crate::aws::protocol::query::{self, QueryError};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ciborium::Value as Cbor;
use serde_json::{Map, Number, Value};

pub const NAMESPACE: &str = "http://monitoring.amazonaws.com/doc/2010-08-01/";
pub const SERVICE: &str = "GraniteServiceVersion20100801";
pub const VERSION: &str = "2010-08-01";

/// Members that are timestamps, in requests and answers.
const TIMESTAMPS: &[&str] = &[
    "Timestamp",
    "Timestamps",
    "StartTime",
    "EndTime",
    "StartDate",
    "EndDate",
    "StateUpdatedTimestamp",
    "StateTransitionedTimestamp",
    "AlarmConfigurationUpdatedTimestamp",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Cbor,
    Json,
    Query,
}

fn from_cbor(v: Cbor) -> Result<Value, String> {
    Ok(match v {
        Cbor::Integer(i) => {
            let i = i128::from(i);
            if let Ok(u) = u64::try_from(i) {
                Value::Number(u.into())
            } else {
                Value::Number(i64::try_from(i).map_err(|_| "integer out of range")?.into())
            }
        }
        Cbor::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Cbor::Text(s) => Value::String(s),
        Cbor::Bytes(b) => Value::String(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            b,
        )),
        Cbor::Bool(b) => Value::Bool(b),
        Cbor::Null => Value::Null,
        // Tag 1: epoch seconds, the only tag Smithy uses.
        Cbor::Tag(1, inner) => from_cbor(*inner)?,
        Cbor::Tag(t, _) => return Err(format!("CBOR tag {t} is not used by this protocol")),
        Cbor::Array(items) => {
            Value::Array(items.into_iter().map(from_cbor).collect::<Result<_, _>>()?)
        }
        Cbor::Map(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                let Cbor::Text(k) = k else {
                    return Err("CBOR map keys must be text".to_owned());
                };
                m.insert(k, from_cbor(v)?);
            }
            Value::Object(m)
        }
        _ => Value::Null,
    })
}

fn to_cbor(v: &Value, timestamp: bool) -> Cbor {
    match v {
        Value::Null => Cbor::Null,
        Value::Bool(b) => Cbor::Bool(*b),
        Value::Number(n) => {
            let plain = if let Some(u) = n.as_u64().filter(|_| !n.is_f64()) {
                Cbor::Integer(u.into())
            } else if let Some(i) = n.as_i64().filter(|_| !n.is_f64()) {
                Cbor::Integer(i.into())
            } else {
                Cbor::Float(n.as_f64().unwrap_or_default())
            };
            if timestamp {
                Cbor::Tag(1, Box::new(Cbor::Float(n.as_f64().unwrap_or_default())))
            } else {
                plain
            }
        }
        Value::String(s) => Cbor::Text(s.clone()),
        Value::Array(items) => Cbor::Array(items.iter().map(|i| to_cbor(i, timestamp)).collect()),
        Value::Object(m) => Cbor::Map(
            m.iter()
                .map(|(k, v)| {
                    (
                        Cbor::Text(k.clone()),
                        to_cbor(v, TIMESTAMPS.contains(&k.as_str())),
                    )
                })
                .collect(),
        ),
    }
}

/// A CBOR request body as a value (an empty body is an empty input).
pub fn decode_cbor(body: &[u8]) -> Result<Value, JsonError> {
    if body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let v: Cbor = ciborium::from_reader(body)
        .map_err(|e| JsonError::new("SerializationException", format!("body is not CBOR: {e}")))?;
    from_cbor(v).map_err(|e| JsonError::new("SerializationException", e))
}

/// A form (awsQuery) as a value: `A.member.2.B=x` becomes `{"A": [_, {"B": "x"}]}`; every
/// leaf stays a string, which the operations read leniently.
pub fn decode_query(params: &[(String, String)]) -> Value {
    let mut root = Value::Object(Map::new());
    for (key, value) in params {
        if key == "Action" || key == "Version" {
            continue;
        }
        let parts: Vec<&str> = key.split('.').collect();
        let mut at = &mut root;
        let mut i = 0;
        while i < parts.len() {
            let last = i + 1 == parts.len();
            if parts[i] == "member" {
                let n: usize = parts.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(1);
                if !at.is_array() {
                    *at = Value::Array(vec![]);
                }
                let Value::Array(items) = at else { break };
                while items.len() < n {
                    items.push(Value::Null);
                }
                at = &mut items[n - 1];
                i += 2;
                if i >= parts.len() {
                    *at = Value::String(value.clone());
                }
                continue;
            }
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            let Value::Object(m) = at else { break };
            at = m.entry(parts[i].to_owned()).or_insert(Value::Null);
            if last {
                *at = Value::String(value.clone());
            }
            i += 1;
        }
    }
    root
}

fn xml(v: &Value, key: &str, out: &mut String) {
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                out.push_str("<member>");
                xml(item, key, out);
                out.push_str("</member>");
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                out.push_str(&format!("<{k}>"));
                xml(v, k, out);
                out.push_str(&format!("</{k}>"));
            }
        }
        Value::Number(n) if TIMESTAMPS.contains(&key) => {
            let ms = (n.as_f64().unwrap_or_default() * 1000.0) as i64;
            let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
            out.push_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        }
        Value::String(s) => out.push_str(&query::escape(s)),
        other => out.push_str(&other.to_string()),
    }
}

pub fn answer(protocol: Protocol, op: &str, v: &Value, request_id: &str) -> Response {
    match protocol {
        Protocol::Cbor => {
            let mut body = Vec::new();
            if ciborium::into_writer(&to_cbor(v, false), &mut body).is_err() {
                return error(
                    protocol,
                    &JsonError::new("InternalFailure", "encoding"),
                    request_id,
                );
            }
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/cbor"),
                    (
                        header::HeaderName::from_static("smithy-protocol"),
                        "rpc-v2-cbor",
                    ),
                ],
                body,
            )
                .into_response()
        }
        Protocol::Json => crate::aws::protocol::json::answer("1.0", v),
        Protocol::Query => {
            let mut body = String::new();
            xml(v, "", &mut body);
            query::answer(NAMESPACE, op, Some(body), request_id)
        }
    }
}

pub fn error(protocol: Protocol, e: &JsonError, request_id: &str) -> Response {
    let query_error = format!("{};Sender", e.code);
    match protocol {
        Protocol::Cbor => {
            let v = serde_json::json!({"__type": format!("com.amazonaws.cloudwatch#{}", e.code), "message": e.message});
            let mut body = Vec::new();
            let _ = ciborium::into_writer(&to_cbor(&v, false), &mut body);
            (
                e.status,
                [
                    (header::CONTENT_TYPE, "application/cbor".to_owned()),
                    (
                        header::HeaderName::from_static("smithy-protocol"),
                        "rpc-v2-cbor".to_owned(),
                    ),
                    (
                        header::HeaderName::from_static("x-amzn-query-error"),
                        query_error,
                    ),
                ],
                body,
            )
                .into_response()
        }
        Protocol::Json => {
            let mut r = crate::aws::protocol::json::error("1.0", e);
            if let Ok(v) = query_error.parse() {
                r.headers_mut().insert("x-amzn-query-error", v);
            }
            r
        }
        Protocol::Query => query::error(
            NAMESPACE,
            &QueryError {
                status: e.status,
                code: e.code,
                message: e.message.clone(),
            },
            request_id,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_forms_become_nested_values() {
        let params: Vec<(String, String)> = [
            ("Action", "PutMetricData"),
            ("Namespace", "ns"),
            ("MetricData.member.1.MetricName", "m"),
            ("MetricData.member.1.Value", "2.5"),
            ("MetricData.member.1.Dimensions.member.1.Name", "group"),
            ("MetricData.member.1.Dimensions.member.1.Value", "g"),
            ("MetricData.member.2.MetricName", "n"),
            ("AlarmActions.member.1", "arn:a"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let v = decode_query(&params);
        assert_eq!(
            v,
            json!({"Namespace": "ns", "AlarmActions": ["arn:a"], "MetricData": [
                {"MetricName": "m", "Value": "2.5", "Dimensions": [{"Name": "group", "Value": "g"}]},
                {"MetricName": "n"}]})
        );
    }

    #[test]
    fn cbor_round_trips_with_timestamps_tagged() {
        let v =
            json!({"Datapoints": [{"Timestamp": 1700000000.5, "Average": 1.0, "SampleCount": 3}]});
        let c = to_cbor(&v, false);
        let Cbor::Map(top) = &c else { panic!() };
        let Cbor::Array(points) = &top[0].1 else {
            panic!()
        };
        let Cbor::Map(point) = &points[0] else {
            panic!()
        };
        let stamp = point
            .iter()
            .find(|(k, _)| k == &Cbor::Text("Timestamp".into()))
            .unwrap();
        assert!(matches!(stamp.1, Cbor::Tag(1, _)));
        let mut bytes = Vec::new();
        ciborium::into_writer(&c, &mut bytes).unwrap();
        assert_eq!(decode_cbor(&bytes).unwrap(), v);
        assert!(decode_cbor(b"\xff\xff").is_err());
    }
}
