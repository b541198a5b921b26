//! AWS's query protocol (awsQuery), as Auto Scaling speaks it: a form-encoded `Action` with
//! members like `InstanceIds.member.1`, answered with XML in the service's namespace.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

/// The parameters of one request.
pub struct Params(BTreeMap<String, String>);

/// AWS's error answer: code, message, HTTP status.
#[derive(Debug)]
pub struct QueryError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl QueryError {
    pub fn validation(message: impl Into<String>) -> Self {
        QueryError {
            status: StatusCode::BAD_REQUEST,
            code: "ValidationError",
            message: message.into(),
        }
    }
}

impl Params {
    pub fn parse(body: &[u8]) -> Self {
        Params(url::form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn pairs(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, QueryError> {
        self.get(name).ok_or_else(|| {
            QueryError::validation(format!("1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null", lower_first(name)))
        })
    }

    pub fn u32(&self, name: &str) -> Result<Option<u32>, QueryError> {
        self.get(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    QueryError::validation(format!(
                        "Invalid value '{v}' for {name}: expected a whole number"
                    ))
                })
            })
            .transpose()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, QueryError> {
        self.get(name)
            .map(|v| match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(QueryError::validation(format!(
                    "Invalid value '{v}' for {name}: expected true or false"
                ))),
            })
            .transpose()
    }

    /// `Name.member.1`, `Name.member.2`, ... in order.
    pub fn list(&self, name: &str) -> Vec<String> {
        (1..)
            .map_while(|i| self.get(&format!("{name}.member.{i}")).map(str::to_owned))
            .collect()
    }

    /// Structures of a list: each `Name.member.N.Field` as a map of fields.
    pub fn structs(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        let mut out = Vec::new();
        for i in 1.. {
            let prefix = format!("{name}.member.{i}.");
            let fields: BTreeMap<String, String> = self
                .0
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|f| (f.to_owned(), v.clone())))
                .collect();
            if fields.is_empty() {
                break;
            }
            out.push(fields);
        }
        out
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A small XML writer for answers.
#[derive(Default)]
pub struct Xml(String);

impl Xml {
    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(tag);
        self.0.push('>');
        self
    }

    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.0.push_str("</");
        self.0.push_str(tag);
        self.0.push('>');
        self
    }

    pub fn field(&mut self, tag: &str, value: impl std::fmt::Display) -> &mut Self {
        self.open(tag);
        self.0.push_str(&escape(&value.to_string()));
        self.close(tag)
    }

    pub fn opt(&mut self, tag: &str, value: Option<impl std::fmt::Display>) -> &mut Self {
        if let Some(v) = value {
            self.field(tag, v);
        }
        self
    }

    pub fn text(self) -> String {
        self.0
    }
}

/// `<ActionResponse xmlns=...><ActionResult>...</ActionResult><ResponseMetadata>...`.
pub fn answer(namespace: &str, action: &str, result: Option<String>, request_id: &str) -> Response {
    let mut body = format!("<{action}Response xmlns=\"{namespace}\">");
    if let Some(r) = result {
        body.push_str(&format!("<{action}Result>{r}</{action}Result>"));
    }
    body.push_str(&format!("<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"));
    (StatusCode::OK, [("content-type", "text/xml")], body).into_response()
}

pub fn error(namespace: &str, e: &QueryError, request_id: &str) -> Response {
    let kind = if e.status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let body = format!(
        "<ErrorResponse xmlns=\"{namespace}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        e.code,
        escape(&e.message)
    );
    (e.status, [("content-type", "text/xml")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_and_structures() {
        let p = Params::parse(b"Action=X&InstanceIds.member.1=i-1&InstanceIds.member.2=i-2&Tags.member.1.Key=a&Tags.member.1.Value=b%26c&Tags.member.2.Key=d");
        assert_eq!(p.list("InstanceIds"), ["i-1", "i-2"]);
        let tags = p.structs("Tags");
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0]["Value"], "b&c");
        assert!(p.required("Nope").unwrap_err().message.contains("'nope'"));
        assert!(Params::parse(b"MinSize=x").u32("MinSize").is_err());
    }

    #[test]
    fn escapes_xml() {
        let mut x = Xml::default();
        x.field("M", "a<b & 'c'");
        assert_eq!(x.text(), "<M>a&lt;b &amp; &apos;c&apos;</M>");
    }
}
