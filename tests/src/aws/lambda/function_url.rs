//! Lambda function URLs (auth type NONE). AWS gives each URL a host of its own,
//! `https://<url-id>.lambda-url.<region>.on.aws/`; here a function with `url = true` is
//! served at `/_function_url/<function>/` on the world's address, and everything after that
//! prefix is the request's path. As AWS does it: the request becomes the function URL event
//! (payload format 2.0: lowercase headers, a text body as it came and any other body in
//! base64, the request context), the function is invoked synchronously, and its answer
//! becomes the response (a `statusCode` object as it says; any other JSON as a 200 with
//! that JSON; a function error as 502). Bodies over 6 MB are refused with 413 before the
//! function runs.

use base64::Engine;
use serde_json::{json, Map, Value};

/// The largest request body a function URL passes on (AWS: 6 MB).
pub const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;

/// What the URL received.
pub struct Incoming<'a> {
    pub function: &'a str,
    pub method: &'a str,
    /// After the `/_function_url/<function>` prefix; `/` at least.
    pub path: &'a str,
    pub query: &'a str,
    /// Names as received; joined with `,` when repeated, as AWS does.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
    pub source_ip: &'a str,
    pub request_id: &'a str,
    /// Epoch milliseconds.
    pub now_ms: i64,
}

/// Content types AWS passes as text; anything else, or a body that is not UTF-8, is base64.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(t) = content_type else {
        return false;
    };
    let t = t
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    t.starts_with("text/")
        || matches!(
            t.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/x-www-form-urlencoded"
        )
        || t.ends_with("+json")
        || t.ends_with("+xml")
}

/// The function URL event (payload format 2.0) for a request.
pub fn event(i: &Incoming) -> Value {
    let mut headers: Map<String, Value> = Map::new();
    for (k, v) in &i.headers {
        let k = k.to_lowercase();
        let joined = match headers.get(&k).and_then(Value::as_str) {
            Some(before) => format!("{before},{v}"),
            None => v.clone(),
        };
        headers.insert(k, Value::String(joined));
    }
    let content_type = headers.get("content-type").and_then(Value::as_str);
    let text = is_text(content_type)
        .then(|| std::str::from_utf8(i.body).ok())
        .flatten();
    let (body, base64) = match text {
        Some(t) => (t.to_owned(), false),
        None => (
            base64::engine::general_purpose::STANDARD.encode(i.body),
            true,
        ),
    };
    let url_id = format!("{:0<32}", i.function.replace(['-', '_'], "").to_lowercase());
    let url_id: String = url_id.chars().take(32).collect();
    let domain = format!("{url_id}.lambda-url.{}.on.aws", crate::aws::REGION);
    let user_agent = headers
        .get("user-agent")
        .cloned()
        .unwrap_or(Value::String(String::new()));
    let mut e = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": i.path,
        "rawQueryString": i.query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": url_id,
            "domainName": domain,
            "domainPrefix": url_id,
            "http": {
                "method": i.method,
                "path": i.path,
                "protocol": "HTTP/1.1",
                "sourceIp": i.source_ip,
                "userAgent": user_agent,
            },
            "requestId": i.request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": chrono::DateTime::from_timestamp_millis(i.now_ms)
                .unwrap_or_default()
                .format("%d/%b/%Y:%H:%M:%S +0000")
                .to_string(),
            "timeEpoch": i.now_ms,
        },
        "isBase64Encoded": base64,
    });
    if !i.body.is_empty() {
        e["body"] = Value::String(body);
    }
    let params: Map<String, Value> = url::form_urlencoded::parse(i.query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    if !params.is_empty() {
        e["queryStringParameters"] = Value::Object(params);
    }
    e
}

/// An HTTP response: status, headers, body.
#[derive(Debug, PartialEq)]
pub struct Outgoing {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The response for a function's answer (`Ok`) or error (`Err`), as AWS reads it.
pub fn response(answer: Result<Value, Value>) -> Outgoing {
    let json_type = || vec![("content-type".to_owned(), "application/json".to_owned())];
    let answer = match answer {
        Ok(a) => a,
        Err(_) => {
            return Outgoing {
                status: 502,
                headers: json_type(),
                body: br#"{"Message":"Internal Server Error"}"#.to_vec(),
            }
        }
    };
    let Some(status) = answer.get("statusCode").and_then(Value::as_u64) else {
        // Not a response object: the whole answer is the body.
        return Outgoing {
            status: 200,
            headers: json_type(),
            body: answer.to_string().into_bytes(),
        };
    };
    let headers = answer["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    let text = answer["body"].as_str().unwrap_or_default();
    let body = if answer["isBase64Encoded"] == true {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default()
    } else {
        text.as_bytes().to_vec()
    };
    Outgoing {
        status: u16::try_from(status).unwrap_or(502),
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming<'a>(headers: Vec<(String, String)>, body: &'a [u8]) -> Incoming<'a> {
        Incoming {
            function: "webhook",
            method: "POST",
            path: "/",
            query: "a=1&b=two",
            headers,
            body,
            source_ip: "127.0.0.1",
            request_id: "r-1",
            now_ms: 1_800_000_000_000,
        }
    }

    fn h(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn a_json_body_passes_as_text_with_lowercase_headers() {
        let e = event(&incoming(
            vec![
                h("Content-Type", "application/json"),
                h("X-GitHub-Event", "ping"),
                h("X-Custom", "a"),
                h("x-custom", "b"),
            ],
            b"{\"zen\": 1}",
        ));
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["body"], "{\"zen\": 1}");
        assert_eq!(e["isBase64Encoded"], false);
        assert_eq!(e["headers"]["x-github-event"], "ping");
        assert_eq!(e["headers"]["x-custom"], "a,b");
        assert_eq!(e["requestContext"]["http"]["method"], "POST");
        assert_eq!(e["requestContext"]["accountId"], "anonymous");
        assert_eq!(e["queryStringParameters"]["b"], "two");
        assert_eq!(e["rawQueryString"], "a=1&b=two");
    }

    #[test]
    fn any_other_body_is_base64() {
        let e = event(&incoming(
            vec![h("content-type", "application/octet-stream")],
            &[0, 1, 2],
        ));
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], "AAEC");
        let e = event(&incoming(vec![], b"text without a type"));
        assert_eq!(e["isBase64Encoded"], true, "no content type: binary");
        let e = event(&incoming(vec![h("content-type", "text/plain")], b""));
        assert!(e.get("body").is_none(), "no body, no field");
    }

    #[test]
    fn answers_become_responses_as_aws_reads_them() {
        let r = response(Ok(json!({
            "statusCode": 401,
            "headers": {"content-type": "application/json"},
            "body": "{\"error\":\"no\"}",
            "isBase64Encoded": false,
            "cookies": []
        })));
        assert_eq!(r.status, 401);
        assert_eq!(r.body, b"{\"error\":\"no\"}");
        let r = response(Ok(
            json!({"statusCode": 200, "body": "aGk=", "isBase64Encoded": true}),
        ));
        assert_eq!(r.body, b"hi");
        let r = response(Ok(json!({"hello": "world"})));
        assert_eq!((r.status, r.body), (200, b"{\"hello\":\"world\"}".to_vec()));
        assert_eq!(response(Err(json!({"errorType": "x"}))).status, 502);
    }
}
