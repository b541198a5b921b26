//! The AWS world's HTTP face: one port, one router. `serve` builds the world and routes
//! each request to its service by protocol (awsQuery's `Action`, awsJson's
//! `X-Amz-Target`, rpc-v2-cbor's path, Lambda's REST paths and function URLs) and the
//! testbed's controls under `/_testbed/aws`; the services themselves live in their folders.

use super::*;

pub async fn serve(
    config: Config,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.time_scale > 0.0 && config.time_scale.is_finite(),
        "--time-scale must be a positive number"
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let moto = match &config.moto {
        MotoMode::Off => None,
        MotoMode::Auto => Some(secretsmanager::Moto::start(None).await?),
        MotoMode::Path(p) => Some(secretsmanager::Moto::start(Some(p.clone())).await?),
    };
    let endpoints = Endpoints {
        autoscaling: format!("http://{}", listener.local_addr()?),
        secretsmanager: moto.as_ref().map(|m| m.url.clone()),
    };
    let world_file = match &config.world_file {
        Some(path) => world_file::WorldFile::read(path)?,
        None => world_file::WorldFile::default(),
    };
    // What an instance's or a function's AWS clients need to find this world.
    let mut process_env = endpoints.env();
    process_env.push(("AWS_ACCESS_KEY_ID".to_owned(), "testbed".to_owned()));
    process_env.push(("AWS_SECRET_ACCESS_KEY".to_owned(), "testbed".to_owned()));
    let instance_env = process_env.clone();
    let script_env = process_env.clone();
    let (temp, dir) = match &config.state_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let temp = tempfile::tempdir().context("creating a state directory")?;
            let dir = temp.path().to_owned();
            (Some(temp), dir)
        }
    };
    let (driver_tx, mut driver_rx) = mpsc::unbounded_channel::<Effect>();
    let mut driver_task = None;
    let clock = Clock {
        start: Instant::now(),
        scale: config.time_scale,
    };
    let lambda = Lambda::new(clock, process_env, dir.join("lambda"), shutdown.clone());
    let rng = match config.seed {
        Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
        None => rand::rngs::StdRng::from_entropy(),
    };
    let world = Arc::new_cyclic(|weak: &std::sync::Weak<World>| {
        let driver = Driver::new(
            dir.clone(),
            config.instance_command.clone(),
            config.bare_instances,
            instance_env,
            Arc::new(Metadata(weak.clone())),
        );
        let instances = driver.info.clone();
        let stop = shutdown.clone();
        driver_task = Some(tokio::spawn(async move {
            let mut driver = driver;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    effect = driver_rx.recv() => match effect {
                        Some(effect) => driver.apply(&effect).await,
                        None => break,
                    },
                }
            }
            driver.shutdown().await;
            drop(temp);
        }));
        World {
            asg: Mutex::new(Asg::new(
                config.boot_delay,
                config.resume_delay,
                config.hibernate_delay,
            )),
            clock,
            stamps: Timestamps {
                started: chrono::Utc::now(),
            },
            effects: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            calls: calls::Calls::default(),
            driver: driver_tx,
            instances,
            endpoints,
            events: Mutex::new(Events::new(rng)),
            lambda,
            deliveries: Mutex::new(Vec::new()),
            ssm: Mutex::new(ssm::Ssm::default()),
            cloudwatch: Mutex::new(cloudwatch::CloudWatch::default()),
            scripts: Mutex::new(BTreeMap::new()),
            instance_env: script_env,
            shutdown: shutdown.clone(),
        }
    });
    // The world file, as the calls Terraform would make.
    for f in world_file.functions {
        world.create_function(f).map_err(anyhow::Error::msg)?;
    }
    for r in world_file.rules {
        if let Some(t) = r.targets.iter().find(|t| !world.lambda.exists(t)) {
            anyhow::bail!(
                "world file: rule {}: target {t} is not a function of the file",
                r.name
            );
        }
        let mut events = lock(&world.events);
        for (op, input) in [("PutRule", r.put_rule()), ("PutTargets", r.put_targets())] {
            let out = events
                .handle(op, &input, world.clock.now())
                .map_err(|e| anyhow::anyhow!("world file: rule {}: {}", r.name, e.message))?;
            if out["FailedEntryCount"].as_u64().unwrap_or(0) > 0 {
                anyhow::bail!("world file: rule {}: {}", r.name, out["FailedEntries"]);
            }
        }
    }
    on_ready(listener.local_addr()?);
    let ticker = world.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => ticker.tick(),
            }
        }
    });
    let app = Router::new()
        .route("/", post(dispatch))
        .route("/service/{service}/operation/{op}", post(cloudwatch_cbor))
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(lambda_invoke),
        )
        .route("/_function_url/{name}", any(function_url_request))
        .route("/_function_url/{name}/", any(function_url_request))
        .route("/_function_url/{name}/{*path}", any(function_url_request))
        .route("/_testbed/aws/effects", get(effects))
        .route("/_testbed/aws/instances", get(instance_list))
        .route("/_testbed/aws/endpoints", get(endpoint_list))
        .route(
            "/_testbed/aws/functions",
            get(function_list).post(function_create),
        )
        .route("/_testbed/aws/invocations", get(invocation_list))
        .route("/_testbed/aws/deliveries", get(delivery_list))
        .route("/_testbed/aws/rules", get(rule_list))
        .route("/_testbed/aws/calls", get(call_counts))
        // Lambda takes requests up to 6 MB (axum stops at 2 MB); larger ones get Lambda's
        // own refusal from the handlers, up to this.
        .layer(axum::extract::DefaultBodyLimit::max(
            2 * lambda::function_url::MAX_REQUEST_BYTES,
        ))
        .route("/_testbed/aws/faults/throttle", put(set_throttle))
        .route(
            "/_testbed/aws/faults/events",
            get(event_faults).put(set_event_faults),
        )
        .with_state(world);
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .await
    .context("serving the AWS world");
    // Instances end with the world: no process is left behind.
    shutdown.cancel();
    if let Some(task) = driver_task {
        let _ = task.await;
    }
    if let Some(m) = moto {
        m.stop().await;
    }
    served
}

/// The API calls served so far, `service:Operation` → count.
async fn call_counts(State(world): State<Arc<World>>) -> Json<BTreeMap<String, u64>> {
    Json(world.calls.counts())
}

#[derive(serde::Deserialize)]
struct Throttle {
    /// `service:Operation`, e.g. `autoscaling:SetInstanceProtection`.
    operation: String,
    count: u32,
}

/// Throttles the next `count` calls of an operation.
async fn set_throttle(State(world): State<Arc<World>>, Json(t): Json<Throttle>) -> StatusCode {
    world.calls.throttle(&t.operation, t.count);
    StatusCode::NO_CONTENT
}

async fn endpoint_list(State(world): State<Arc<World>>) -> Json<Endpoints> {
    Json(world.endpoints.clone())
}

async fn instance_list(State(world): State<Arc<World>>) -> Json<Vec<InstanceInfo>> {
    Json(lock(&world.instances).values().cloned().collect())
}

async fn effects(State(world): State<Arc<World>>) -> Json<Vec<Recorded>> {
    Json(lock(&world.effects).clone())
}

/// Lambda's Invoke API (restJson): `RequestResponse` waits for the function's answer,
/// `Event` queues it as EventBridge would.
async fn lambda_invoke(
    State(world): State<Arc<World>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use axum::http::StatusCode;
    let name = lambda::function_name(&name).unwrap_or(&name).to_owned();
    let not_found = || {
        let e = JsonError {
            status: StatusCode::NOT_FOUND,
            code: "ResourceNotFoundException",
            message: format!("Function not found: {}", lambda::function_arn(&name)),
        };
        protocol::json::error("1.1", &e)
    };
    if !world.lambda.exists(&name) {
        return not_found();
    }
    if body.len() > lambda::function_url::MAX_REQUEST_BYTES {
        let e = JsonError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "RequestTooLargeException",
            message: "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
                .to_owned(),
        };
        return protocol::json::error("1.1", &e);
    }
    let payload: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                let e = JsonError::new(
                    "InvalidRequestContentException",
                    format!("Could not parse request body into json: {e}"),
                );
                return protocol::json::error("1.1", &e);
            }
        }
    };
    let kind = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    match kind {
        "Event" => match world.lambda.invoke_async(&name, payload, "invoke") {
            Ok(()) => StatusCode::ACCEPTED.into_response(),
            Err(_) => not_found(),
        },
        "RequestResponse" => match world.lambda.invoke(&name, payload).await {
            Ok(done) if done.outcome == "success" => (
                StatusCode::OK,
                [("x-amz-executed-version", "$LATEST")],
                done.response.unwrap_or(Value::Null).to_string(),
            )
                .into_response(),
            Ok(done) => (
                StatusCode::OK,
                [
                    ("x-amz-executed-version", "$LATEST"),
                    ("x-amz-function-error", "Unhandled"),
                ],
                done.error.unwrap_or(Value::Null).to_string(),
            )
                .into_response(),
            Err(_) => not_found(),
        },
        other => protocol::json::error(
            "1.1",
            &JsonError::new(
                "InvalidParameterValueException",
                format!("InvocationType {other} is not modelled by the testbed"),
            ),
        ),
    }
}

/// A request to a function URL: the function invoked with the event AWS builds, its answer
/// sent back as AWS reads it (see `function_url`).
async fn function_url_request(
    State(world): State<Arc<World>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use axum::http::StatusCode;
    let rest = uri
        .path()
        .strip_prefix("/_function_url/")
        .unwrap_or_default();
    let (name, path) = match rest.split_once('/') {
        Some((name, path)) => (name, format!("/{path}")),
        None => (rest, "/".to_owned()),
    };
    if !world.lambda.has_url(name) {
        return (StatusCode::FORBIDDEN, Json(json!({"Message": "Forbidden"}))).into_response();
    }
    if body.len() > lambda::function_url::MAX_REQUEST_BYTES {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"Message": "Request must be smaller than 6291456 bytes for the InvokeFunction operation"})),
        )
            .into_response();
    }
    let request_id = protocol::json::uuid(&mut rand::thread_rng());
    let event = lambda::function_url::event(&lambda::function_url::Incoming {
        function: name,
        method: method.as_str(),
        path: &path,
        query: uri.query().unwrap_or_default(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: &body,
        source_ip: &peer.ip().to_string(),
        request_id: &request_id,
        now_ms: (world.stamps.epoch(world.clock.now()) * 1000.0) as i64,
    });
    let answer = match world.lambda.invoke(name, event).await {
        Ok(done) if done.outcome == "success" => Ok(done.response.unwrap_or(Value::Null)),
        Ok(done) => Err(done.error.unwrap_or(Value::Null)),
        Err(_) => {
            return (StatusCode::FORBIDDEN, Json(json!({"Message": "Forbidden"}))).into_response()
        }
    };
    let out = lambda::function_url::response(answer);
    let mut response = (
        StatusCode::from_u16(out.status).unwrap_or(StatusCode::BAD_GATEWAY),
        out.body,
    )
        .into_response();
    for (k, v) in out.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(k),
            axum::http::HeaderValue::try_from(v),
        ) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

async fn function_list(State(world): State<Arc<World>>) -> Json<Vec<FunctionSpec>> {
    Json(world.lambda.specs())
}

/// The testbed's CreateFunction: a binary on this machine instead of a zip.
async fn function_create(
    State(world): State<Arc<World>>,
    Json(spec): Json<FunctionSpec>,
) -> Response {
    match world.create_function(spec) {
        Ok(()) => axum::http::StatusCode::CREATED.into_response(),
        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn invocation_list(State(world): State<Arc<World>>) -> Json<Vec<lambda::Invocation>> {
    Json(world.lambda.invocations())
}

async fn delivery_list(State(world): State<Arc<World>>) -> Json<Vec<Dispatch>> {
    Json(lock(&world.deliveries).clone())
}

async fn rule_list(State(world): State<Arc<World>>) -> Json<Vec<eventbridge::Rule>> {
    Json(lock(&world.events).rules())
}

async fn event_faults(State(world): State<Arc<World>>) -> Json<eventbridge::Faults> {
    Json(lock(&world.events).faults.clone())
}

async fn set_event_faults(
    State(world): State<Arc<World>>,
    Json(faults): Json<eventbridge::Faults>,
) -> Response {
    if !(0.0..=1.0).contains(&faults.duplicate)
        || faults.max_delay_seconds.is_nan()
        || faults.max_delay_seconds < 0.0
    {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "duplicate must be in [0, 1] and max_delay_seconds at least 0",
        )
            .into_response();
    }
    lock(&world.events).faults = faults;
    axum::http::StatusCode::NO_CONTENT.into_response()
}

fn request_id(world: &World) -> String {
    format!(
        "{:08x}-0000-4000-8000-000000000000",
        world.requests.fetch_add(1, Ordering::Relaxed)
    )
}

/// One CloudWatch operation, in whichever protocol it came.
fn cloudwatch_operation(
    world: &Arc<World>,
    protocol: cloudwatch::wire::Protocol,
    op: &str,
    input: Result<Value, JsonError>,
) -> Response {
    let id = request_id(world);
    if world.calls.arrive("cloudwatch", op) {
        let e = JsonError::new("Throttling", calls::RATE_EXCEEDED);
        return cloudwatch::wire::error(protocol, &e, &id);
    }
    let input = match input {
        Ok(i) => i,
        Err(e) => return cloudwatch::wire::error(protocol, &e, &id),
    };
    world.tick();
    let now = world.clock.now();
    let result = lock(&world.cloudwatch).handle(op, &input, world.stamps.epoch(now));
    match result {
        Ok((out, runs)) => {
            world.run_actions(runs, now);
            cloudwatch::wire::answer(protocol, op, &out, &id)
        }
        Err(e) => {
            tracing::info!(op, code = e.code, message = %e.message, "cloudwatch error");
            cloudwatch::wire::error(protocol, &e, &id)
        }
    }
}

async fn cloudwatch_cbor(
    State(world): State<Arc<World>>,
    axum::extract::Path((service, op)): axum::extract::Path<(String, String)>,
    body: Bytes,
) -> Response {
    let input = if service == cloudwatch::wire::SERVICE {
        cloudwatch::wire::decode_cbor(&body)
    } else {
        Err(JsonError::new(
            "UnknownOperationException",
            format!("the testbed serves no RPC v2 service {service}"),
        ))
    };
    cloudwatch_operation(&world, cloudwatch::wire::Protocol::Cbor, &op, input)
}

/// One awsJson operation, `X-Amz-Target: Service.Operation`.
fn json_operation(world: &Arc<World>, target: &str, body: &[u8]) -> Response {
    let (service, op) = target.split_once('.').unwrap_or((target, ""));
    if service == cloudwatch::wire::SERVICE {
        let input = serde_json::from_slice(body).map_err(|e| {
            JsonError::new("SerializationException", format!("body is not JSON: {e}"))
        });
        return cloudwatch_operation(world, cloudwatch::wire::Protocol::Json, op, input);
    }
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return protocol::json::error(
                    "1.1",
                    &JsonError::new("SerializationException", format!("body is not JSON: {e}")),
                )
            }
        }
    };
    if world.calls.arrive(service, op) {
        let e = JsonError::new("ThrottlingException", calls::RATE_EXCEEDED);
        return protocol::json::error("1.1", &e);
    }
    world.tick();
    let now = world.clock.now();
    let (version, result) = match service {
        "AWSEvents" => ("1.1", lock(&world.events).handle(op, &input, now)),
        "AmazonSSM" => {
            let result = lock(&world.ssm).handle(
                op,
                &input,
                now,
                |i| world.agent(i),
                |t| world.stamps.epoch(t),
                |t| world.stamps.at(t),
            );
            if op == "CancelCommand" && result.is_ok() {
                let (command, only) = ssm::Ssm::cancelling(&input);
                for ((c, i), token) in lock(&world.scripts).iter() {
                    if Some(c) == command.as_ref() && (only.is_empty() || only.contains(i)) {
                        token.cancel();
                    }
                }
            }
            ("1.1", result)
        }
        _ => (
            "1.1",
            Err(JsonError::new(
                "UnknownOperationException",
                format!("the testbed serves no service {service}"),
            )),
        ),
    };
    world.tick();
    match result {
        Ok(out) => protocol::json::answer(version, &out),
        Err(e) => {
            tracing::info!(target, code = e.code, message = %e.message, "json protocol error");
            protocol::json::error(version, &e)
        }
    }
}

/// Picks the service the way AWS does: awsQuery requests carry `Action` in the form body.
async fn dispatch(State(world): State<Arc<World>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return json_operation(&world, target, &body);
    }
    let params = Params::parse(&body);
    if params.get("Version") == Some(cloudwatch::wire::VERSION) {
        let action = params.get("Action").unwrap_or_default().to_owned();
        let input = Ok(cloudwatch::wire::decode_query(&params.pairs()));
        return cloudwatch_operation(&world, cloudwatch::wire::Protocol::Query, &action, input);
    }
    let request_id = request_id(&world);
    let Some(action) = params.get("Action").map(str::to_owned) else {
        return protocol::query::error(
            api::NAMESPACE,
            &QueryError::validation("Action is required"),
            &request_id,
        );
    };
    if world.calls.arrive("autoscaling", &action) {
        let e = QueryError {
            status: StatusCode::BAD_REQUEST,
            code: "Throttling",
            message: calls::RATE_EXCEEDED.into(),
        };
        return protocol::query::error(api::NAMESPACE, &e, &request_id);
    }
    world.tick();
    let now = world.clock.now();
    let alarms: Vec<api::AlarmRef> = lock(&world.cloudwatch)
        .alarms()
        .map(|a| api::AlarmRef {
            name: a.name.clone(),
            arn: a.arn.clone(),
            actions: a.actions().cloned().collect(),
        })
        .collect();
    let result = {
        let mut asg = lock(&world.asg);
        api::handle(&mut asg, &action, &params, now, &world.stamps, &alarms)
    };
    world.tick();
    match result {
        Ok(xml) => protocol::query::answer(api::NAMESPACE, &action, xml, &request_id),
        Err(e) => {
            tracing::info!(action, code = e.code, message = %e.message, "auto scaling error");
            protocol::query::error(api::NAMESPACE, &e, &request_id).into_response()
        }
    }
}
