//! GitHub's REST endpoints, as far as warmfleet calls them: runners, their tokens and labels,
//! runner groups, app installations and the rate limit.

use super::auth::Caller;
use super::gate::{gate, rate_status};
use super::state::{Purpose, RunnerRec};
use super::{now, ApiError, Shared};
use axum::extract::{Extension, OriginalUri, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

type Params = Path<HashMap<String, String>>;

pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    let mut router = Router::new()
        .route("/rate_limit", get(rate_limit))
        .route("/orgs/{org}/installation", get(installation))
        .route("/repos/{owner}/{repo}/installation", get(installation))
        .route(
            "/app/installations/{installation_id}/access_tokens",
            post(access_token),
        );
    for prefix in [
        "/orgs/{org}",
        "/repos/{owner}/{repo}",
        "/enterprises/{enterprise}",
    ] {
        let runners = format!("{prefix}/actions/runners");
        router = router
            .route(&runners, get(list_runners))
            .route(
                &format!("{runners}/registration-token"),
                post(registration_token),
            )
            .route(&format!("{runners}/remove-token"), post(remove_token))
            .route(
                &format!("{runners}/generate-jitconfig"),
                post(generate_jitconfig),
            )
            .route(
                &format!("{runners}/{{runner_id}}"),
                get(get_runner).delete(delete_runner),
            )
            .route(
                &format!("{runners}/{{runner_id}}/labels"),
                get(list_labels).delete(delete_custom_labels),
            );
    }
    router = router
        .route("/orgs/{org}/hooks", post(create_hook))
        .route("/repos/{owner}/{repo}/hooks", post(create_hook))
        .route("/orgs/{org}/actions/runner-groups", get(runner_groups))
        .route(
            "/enterprises/{enterprise}/actions/runner-groups",
            get(runner_groups),
        );
    router
        .fallback(|| async { ApiError::not_found() })
        .layer(axum::middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// The scope a path names (`orgs/acme`...), if the caller may act on it.
fn authorize(
    shared: &Shared,
    caller: &Caller,
    params: &HashMap<String, String>,
) -> Result<String, ApiError> {
    let (scope, account) = if let Some(org) = params.get("org") {
        (format!("orgs/{org}"), Some(org.clone()))
    } else if let (Some(owner), Some(repo)) = (params.get("owner"), params.get("repo")) {
        (format!("repos/{owner}/{repo}"), Some(owner.clone()))
    } else if let Some(ent) = params.get("enterprise") {
        (format!("enterprises/{ent}"), None)
    } else {
        return Err(ApiError::not_found());
    };
    match caller {
        Caller::Anonymous => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Requires authentication",
            ))
        }
        Caller::App(_) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
            ))
        }
        Caller::Installation {
            account: granted, ..
        } => {
            if !account.is_some_and(|a| a.eq_ignore_ascii_case(granted)) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Resource not accessible by integration",
                ));
            }
        }
        Caller::Pat(_) => {}
    }
    if !shared.scope_exists(&scope) {
        return Err(ApiError::not_found());
    }
    Ok(scope)
}

fn runner_json(r: &RunnerRec, shared: &Shared) -> Value {
    let settings = shared.world().settings.clone();
    runner_json_with(r, r.online(now(), &settings))
}

fn runner_json_with(r: &RunnerRec, online: bool) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "os": r.os,
        "status": if online { "online" } else { "offline" },
        "busy": r.busy(),
        "ephemeral": r.ephemeral,
        "runner_group_id": r.runner_group_id,
        "labels": r.labels,
    })
}

fn token_reply(token: String, expires_at: chrono::DateTime<chrono::Utc>) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({ "token": token, "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) })),
    )
        .into_response()
}

async fn registration_token(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
) -> Result<Response, ApiError> {
    let scope = authorize(&shared, &caller, &params)?;
    let (token, expires) = shared
        .world()
        .mint_token(&scope, Purpose::Registration, now());
    Ok(token_reply(token, expires))
}

async fn remove_token(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
) -> Result<Response, ApiError> {
    let scope = authorize(&shared, &caller, &params)?;
    let (token, expires) = shared.world().mint_token(&scope, Purpose::Remove, now());
    Ok(token_reply(token, expires))
}

#[derive(Deserialize)]
struct JitBody {
    name: Option<String>,
    runner_group_id: Option<u64>,
    labels: Option<Vec<String>>,
    #[serde(default)]
    work_folder: Option<String>,
}

/// What `run.sh --jitconfig` decodes.
#[derive(serde::Serialize, Deserialize)]
pub struct JitPayload {
    /// The fake's own base URL, where the listener connects.
    pub server: String,
    pub runner_id: u64,
    pub runner_name: String,
    pub credential: String,
    pub work_folder: String,
}

async fn generate_jitconfig(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
    headers: HeaderMap,
    body: Option<Json<JitBody>>,
) -> Result<Response, ApiError> {
    let scope = authorize(&shared, &caller, &params)?;
    let invalid = |m: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid request.\n\n{m}"),
        )
    };
    let Some(Json(body)) = body else {
        return Err(invalid("The request body is not valid JSON."));
    };
    let name = body
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid("\"name\" wasn't supplied."))?;
    let group = body
        .runner_group_id
        .ok_or_else(|| invalid("\"runner_group_id\" wasn't supplied."))?;
    let labels = body
        .labels
        .ok_or_else(|| invalid("\"labels\" wasn't supplied."))?;
    if labels.is_empty() || labels.len() > 100 {
        return Err(invalid("\"labels\" must have between 1 and 100 items."));
    }
    if group != 1 {
        return Err(ApiError::not_found());
    }
    let runner = shared
        .world()
        .register_jit(&scope, &name, &labels, group, now())?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let payload = JitPayload {
        server: format!("http://{host}"),
        runner_id: runner.id,
        runner_name: runner.name.clone(),
        credential: runner.credential.clone(),
        work_folder: body.work_folder.unwrap_or_else(|| "_work".into()),
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(
        serde_json::to_vec(&payload)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    shared.changed.notify_waiters();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "runner": runner_json_with(&runner, false), "encoded_jit_config": encoded })),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    per_page: Option<usize>,
    page: Option<usize>,
    name: Option<String>,
}

async fn list_runners(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
    Query(q): Query<ListQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = authorize(&shared, &caller, &params)?;
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let (total, runners) = {
        let world = shared.world();
        let at = now();
        // Only the page's runners are rendered: a page of 100 costs the same at 50,000.
        let matching = || {
            world
                .runners
                .values()
                .filter(|r| r.scope == scope)
                .filter(|r| q.name.as_ref().is_none_or(|n| r.name == *n))
        };
        let total = matching().count();
        let page_items: Vec<Value> = matching()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|r| runner_json_with(r, r.online(at, &world.settings)))
            .collect();
        (total, page_items)
    };
    let body = json!({ "total_count": total, "runners": runners }).to_string();
    let etag = format!(
        "W/\"{}\"",
        &hex::encode(Sha256::digest(body.as_bytes()))[..32]
    );
    let last = total.div_ceil(per_page).max(1);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let page_url = |n: usize| {
        let mut link = format!("http://{host}{}?per_page={per_page}&page={n}", uri.path());
        if let Some(name) = &q.name {
            link.push_str("&name=");
            link.push_str(
                &url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>(),
            );
        }
        link
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", page_url(page - 1)));
    }
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", page_url(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", page_url(last)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"first\"", page_url(1)));
    }
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if !links.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
            h.insert(header::LINK, v);
        }
    }
    Ok(resp)
}

fn runner_id(params: &HashMap<String, String>) -> Result<u64, ApiError> {
    params
        .get("runner_id")
        .and_then(|id| id.parse().ok())
        .ok_or_else(ApiError::not_found)
}

async fn get_runner(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
) -> Result<Json<Value>, ApiError> {
    let scope = authorize(&shared, &caller, &params)?;
    let id = runner_id(&params)?;
    let runner = shared
        .world()
        .runners
        .get(&id)
        .filter(|r| r.scope == scope)
        .cloned()
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(runner_json(&runner, &shared)))
}

async fn delete_runner(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
) -> Result<StatusCode, ApiError> {
    let scope = authorize(&shared, &caller, &params)?;
    let id = runner_id(&params)?;
    shared.world().delete_runner(&scope, id)?;
    shared.changed.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

async fn list_labels(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
) -> Result<Json<Value>, ApiError> {
    let scope = authorize(&shared, &caller, &params)?;
    let id = runner_id(&params)?;
    let labels = shared
        .world()
        .runners
        .get(&id)
        .filter(|r| r.scope == scope)
        .map(|r| r.labels.clone())
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(
        json!({ "total_count": labels.len(), "labels": labels }),
    ))
}

async fn delete_custom_labels(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
) -> Result<Json<Value>, ApiError> {
    let scope = authorize(&shared, &caller, &params)?;
    let id = runner_id(&params)?;
    let labels = shared.world().remove_custom_labels(&scope, id)?;
    Ok(Json(
        json!({ "total_count": labels.len(), "labels": labels }),
    ))
}

async fn runner_groups(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<Value>, ApiError> {
    authorize(&shared, &caller, &params)?;
    Ok(Json(json!({
        "total_count": 1,
        "runner_groups": [{
            "id": 1,
            "name": "Default",
            "visibility": "all",
            "default": true,
            "runners_url": format!("{}/1/runners", uri.path()),
            "inherited": false,
            "allows_public_repositories": false,
            "restricted_to_workflows": false,
            "selected_workflows": [],
            "workflow_restrictions_read_only": false,
        }],
    })))
}

fn account_json(login: &str, id: u64) -> Value {
    let url = format!("https://api.github.com/users/{login}");
    json!({
        "login": login, "id": id, "node_id": format!("O_{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}"),
        "gravatar_id": "", "url": url, "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{url}/followers"),
        "following_url": format!("{url}/following{{/other_user}}"),
        "gists_url": format!("{url}/gists{{/gist_id}}"),
        "starred_url": format!("{url}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{url}/subscriptions"),
        "organizations_url": format!("{url}/orgs"),
        "repos_url": format!("{url}/repos"),
        "events_url": format!("{url}/events{{/privacy}}"),
        "received_events_url": format!("{url}/received_events"),
        "type": "Organization", "site_admin": false,
    })
}

/// `GET /orgs/{org}/installation`, `GET /repos/{owner}/{repo}/installation`: app JWT only.
async fn installation(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
) -> Result<Json<Value>, ApiError> {
    let Caller::App(app_id) = caller else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        ));
    };
    let (scope, account) = match (params.get("org"), params.get("owner"), params.get("repo")) {
        (Some(org), _, _) => (format!("orgs/{org}"), org.clone()),
        (_, Some(owner), Some(repo)) => (format!("repos/{owner}/{repo}"), owner.clone()),
        _ => return Err(ApiError::not_found()),
    };
    if !shared.scope_exists(&scope) {
        return Err(ApiError::not_found());
    }
    let inst = shared
        .credentials
        .installation_for(app_id, &account)
        .ok_or_else(ApiError::not_found)?;
    let at = "2024-01-01T00:00:00Z";
    Ok(Json(json!({
        "id": inst.id,
        "account": account_json(&account, 5000 + inst.id),
        "access_tokens_url": format!("https://api.github.com/app/installations/{}/access_tokens", inst.id),
        "repositories_url": "https://api.github.com/installation/repositories",
        "html_url": format!("https://github.com/organizations/{account}/settings/installations/{}", inst.id),
        "app_id": app_id,
        "app_slug": format!("warmfleet-{app_id}"),
        "target_id": 5000 + inst.id,
        "target_type": "Organization",
        "permissions": { "organization_self_hosted_runners": "write", "administration": "write" },
        "events": [],
        "created_at": at,
        "updated_at": at,
        "single_file_name": null,
        "repository_selection": "all",
        "suspended_by": null,
        "suspended_at": null,
    })))
}

/// `POST /app/installations/{id}/access_tokens`: app JWT only.
async fn access_token(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
) -> Result<Response, ApiError> {
    let Caller::App(app_id) = caller else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        ));
    };
    let id: u64 = params
        .get("installation_id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(ApiError::not_found)?;
    let inst = shared
        .credentials
        .installations
        .iter()
        .find(|i| i.id == id && i.app_id == app_id)
        .cloned()
        .ok_or_else(ApiError::not_found)?;
    let (token, expires_at) = shared.credentials.issue_token(&inst, now());
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "permissions": { "organization_self_hosted_runners": "write", "administration": "write" },
            "repository_selection": "all",
        })),
    )
        .into_response())
}

async fn rate_limit(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let (limit, remaining, reset) = rate_status(&shared.gate, &caller);
    let core = json!({ "limit": limit, "remaining": remaining, "reset": reset.timestamp(), "used": limit - remaining, "resource": "core" });
    let search = json!({ "limit": 30, "remaining": 30, "reset": reset.timestamp(), "used": 0, "resource": "search" });
    Json(json!({ "resources": { "core": core, "search": search }, "rate": core }))
}

#[derive(Deserialize)]
struct HookConfig {
    url: Option<String>,
    content_type: Option<String>,
    secret: Option<String>,
}

#[derive(Deserialize)]
struct NewHook {
    name: Option<String>,
    config: Option<HookConfig>,
    events: Option<Vec<String>>,
    active: Option<bool>,
}

/// GitHub's 422 for a hook it will not create.
fn hook_invalid(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// `POST /orgs/{org}/hooks`, `POST /repos/{owner}/{repo}/hooks`: a webhook (`name` "web",
/// `config.url`, `config.content_type` json, `config.secret`, `events`), pinged at once.
/// Only JSON hooks are modelled.
async fn create_hook(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(params): Params,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let scope = authorize(&shared, &caller, &params)?;
    let hook: NewHook = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Problems parsing JSON: {e}"),
        )
    })?;
    // An organisation's hook must name itself "web"; a repository's may leave it out.
    let default_name = (!scope.starts_with("orgs/")).then_some("web");
    if hook.name.as_deref().or(default_name) != Some("web") {
        return Err(hook_invalid(
            "Validation Failed: name must be passed as \"web\"",
        ));
    }
    let config = hook
        .config
        .ok_or_else(|| hook_invalid("Validation Failed: config is missing"))?;
    let url = config
        .url
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .ok_or_else(|| hook_invalid("Validation Failed: config.url must be an http(s) URL"))?;
    if config.content_type.as_deref().unwrap_or("form") != "json" {
        return Err(hook_invalid(
            "Validation Failed: the testbed models only content_type json",
        ));
    }
    if hook.active == Some(false) {
        return Err(hook_invalid(
            "Validation Failed: the testbed models only active hooks",
        ));
    }
    let events = hook.events.unwrap_or_else(|| vec!["push".to_owned()]);
    let secret = config.secret.unwrap_or_default();
    let id = shared.hooks.add(&scope, &url, &secret, events.clone());
    Ok((
        StatusCode::CREATED,
        Json(super::webhooks::hook_json(id, &scope, &url, &events)),
    ))
}
