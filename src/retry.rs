//! Retries and failover: what Envoy retries on the same deployment (a group of one, as
//! LiteLLM does), and the filter's failover to another deployment or fallback group once an
//! attempt failed. Decided here; the shell sends the headers and the failover's callout.

use crate::config::{Config, Deployment};
use crate::gateway::{attempt, Forward};
use crate::host::Host;
use crate::request::{Inference, InferenceBody};
use crate::router;
use crate::scope::Target;

/// What Envoy retries on the same deployment: failures where the request never reached the
/// model (connection refused or reset, refused streams). Anything else moves to another
/// deployment through the filter's failover, which also counts toward cooldown.
pub const ENVOY_RETRY_ON: &str = "connect-failure,refused-stream,reset";
/// `ENVOY_RETRY_ON` plus the route's `retriable_status_codes` (429 on the shipped and
/// rendered routes), plus any statuses sent in `x-envoy-retriable-status-codes`.
const RETRY_ON_429: &str = "connect-failure,refused-stream,reset,retriable-status-codes";
/// `ENVOY_RETRY_ON` plus every 5xx answer.
const RETRY_ON_5XX: &str = "connect-failure,refused-stream,reset,5xx";
const RETRY_ON_429_5XX: &str = "connect-failure,refused-stream,reset,retriable-status-codes,5xx";

/// How Envoy retries a request on the same deployment (see `same_deployment_retries`):
/// `x-envoy-retry-on`, and statuses for `x-envoy-retriable-status-codes` when the retry-on
/// words cannot say them. The usual cases need no second header (a host call each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRetries {
    pub retry_on: &'static str,
    pub statuses: Option<&'static str>,
}

impl StatusRetries {
    /// Connection failures and resets only.
    pub const OFF: StatusRetries = StatusRetries {
        retry_on: ENVOY_RETRY_ON,
        statuses: None,
    };
}

/// What the Envoy route already sets for every routed request (`render` writes the route and
/// says so in `general_settings.envoy_route_defaults`): a header that would repeat it is one
/// host call saved. The route's `retry_on` is always `ENVOY_RETRY_ON`, the least any request
/// retries on (so it is not kept here): Envoy ORs a request's `x-envoy-retry-on` into the
/// route's (measured), so a header can widen the route's retry conditions but never narrow
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDefaults {
    pub timeout_ms: u64,
    pub num_retries: u32,
}

/// The route defaults `render` writes: the timeout and same-deployment retries most
/// deployments take (so most requests send none of those headers); `None` without
/// deployments.
pub fn route_defaults_for(config: &Config) -> Option<RouteDefaults> {
    fn most_common<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Option<T> {
        let mut counts: Vec<(T, usize)> = Vec::new();
        for item in items {
            match counts.iter_mut().find(|(t, _)| *t == item) {
                Some((_, n)) => *n += 1,
                None => counts.push((item, 1)),
            }
        }
        // The first of the most frequent, in config order: the same config renders the same.
        let best = counts.iter().map(|(_, n)| *n).max()?;
        counts.into_iter().find(|(_, n)| *n == best).map(|(t, _)| t)
    }
    let timeout_ms = most_common(config.deployments.iter().map(|d| d.timeout_ms))?;
    let num_retries = most_common(
        config
            .deployments
            .iter()
            .map(|d| same_deployment_retries(config, d, None).0),
    )?;
    Some(RouteDefaults {
        timeout_ms,
        num_retries,
    })
}

/// The Envoy headers a forward sets; `None` leaves the route's own value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpstreamKnobs<'a> {
    /// `x-envoy-upstream-rq-timeout-ms`.
    pub timeout_ms: Option<u64>,
    /// `x-envoy-retry-on`, `x-envoy-retriable-status-codes`, `x-envoy-max-retries`.
    pub retry_on: Option<&'a str>,
    pub statuses: Option<&'a str>,
    pub max_retries: Option<u32>,
}

/// Which of Envoy's per-request knobs `forward` must set over `route` (without what the
/// route sets, all of them: a route without defaults retries nothing and never times out).
pub fn upstream_knobs<'a>(
    forward: &'a Forward,
    route: Option<&RouteDefaults>,
) -> UpstreamKnobs<'a> {
    let retries = forward.envoy_retries;
    let wanted = &forward.retry_statuses;
    let Some(route) = route else {
        return UpstreamKnobs {
            timeout_ms: Some(forward.timeout_ms),
            retry_on: (retries > 0).then_some(wanted.retry_on),
            statuses: if retries > 0 { wanted.statuses } else { None },
            max_retries: (retries > 0).then_some(retries),
        };
    };
    let timeout_ms = (forward.timeout_ms != route.timeout_ms).then_some(forward.timeout_ms);
    if retries == 0 {
        // The route would retry: say none.
        return UpstreamKnobs {
            timeout_ms,
            max_retries: (route.num_retries > 0).then_some(0),
            ..UpstreamKnobs::default()
        };
    }
    UpstreamKnobs {
        timeout_ms,
        retry_on: (wanted.retry_on != ENVOY_RETRY_ON).then_some(wanted.retry_on),
        statuses: wanted.statuses,
        max_retries: (retries != route.num_retries).then_some(retries),
    }
}

/// A request kept for failover: the client's body and where it may still go.
#[derive(Debug, Clone)]
pub struct Replay {
    pub kind: Inference,
    pub body: Vec<u8>,
    /// The group chain: the first group, then its fallbacks (each one the caller may use,
    /// or an operator's fallback of one it may use).
    pub groups: Vec<Target>,
    pub position: usize,
    /// Deployments already tried.
    pub tried: Vec<usize>,
    /// The request's own `num_retries` (it wins over the router's settings).
    pub num_retries: Option<u32>,
    /// Retries already spent within the current group.
    pub retries_used: u32,
    /// Groups the body named as fallbacks with their own messages, and those messages.
    pub fallback_messages: Vec<(usize, String)>,
    pub estimated_tokens: u64,
    /// The request's tags, when tag routing is on.
    pub tags: Vec<String>,
}

/// LiteLLM retries a group of one deployment on that deployment (`num_retries`, or
/// `retry_policy` per kind of failure). Envoy does it here, before the answer reaches the
/// filter: it retries those statuses with its backoff, waiting what `retry-after` says
/// where the route has `rate_limited_retry_back_off` (the shipped and rendered configs do,
/// with `retriable_status_codes: [429]`). A group with more deployments fails over in the
/// filter instead, to another deployment. Returns the retries and how.
pub(crate) fn same_deployment_retries(
    config: &Config,
    deployment: &Deployment,
    requested: Option<u32>,
) -> (u32, StatusRetries) {
    let r = &config.router;
    // The request's num_retries, else the deployment's (`litellm_params.num_retries`).
    let requested = requested.or(deployment.num_retries);
    let connect = requested.unwrap_or(r.num_retries);
    let single = config
        .groups
        .get(deployment.group)
        .is_some_and(|g| g.deployments.len() == 1);
    if !single {
        return (connect, StatusRetries::OFF);
    }
    let policy = r.retry_policy_of(deployment.group);
    let allowed = |kind: Option<u32>| requested.or(kind).unwrap_or(r.num_retries);
    let (rate_limit, server, timeout) = (
        allowed(policy.rate_limit),
        allowed(policy.internal_server),
        allowed(policy.timeout),
    );
    let most = connect.max(rate_limit).max(server).max(timeout);
    // 429 comes from the route's list; 5xx is one retry-on word. Only a policy that splits
    // server errors from timeouts needs the statuses listed (and then also retries 429,
    // which the route lists: Envoy adds the header's statuses to the route's).
    let retries = match (rate_limit > 0, server > 0, timeout > 0) {
        (false, false, false) => StatusRetries::OFF,
        (true, false, false) => StatusRetries {
            retry_on: RETRY_ON_429,
            statuses: None,
        },
        (false, true, true) => StatusRetries {
            retry_on: RETRY_ON_5XX,
            statuses: None,
        },
        (true, true, true) => StatusRetries {
            retry_on: RETRY_ON_429_5XX,
            statuses: None,
        },
        (_, true, false) => StatusRetries {
            retry_on: RETRY_ON_429,
            statuses: Some("500,502,503"),
        },
        (_, false, true) => StatusRetries {
            retry_on: RETRY_ON_429,
            statuses: Some("504"),
        },
    };
    (most, retries)
}

/// The attempt failed with `status` (5xx, 429, a timeout, 503 for no answer): another
/// deployment of the group while retries last (the request's `num_retries`, else the
/// `retry_policy` for that kind of failure, else `num_retries`), then the next fallback
/// group. `None` when nothing is left.
pub fn failover(
    config: &Config,
    host: &mut dyn Host,
    replay: &mut Replay,
    status: u16,
) -> Option<Forward> {
    let original = InferenceBody::parse(replay.kind, &replay.body).ok()?;
    let failed = replay.tried.last().and_then(|&i| config.deployment(i));
    // The request's num_retries, else the failed deployment's, else its group's policy for
    // this kind of failure (LiteLLM's model_group_retry_policy), else the router's.
    let allowed = replay
        .num_retries
        .or(failed.and_then(|d| d.num_retries))
        .unwrap_or_else(|| {
            let group = failed.map_or(usize::MAX, |d| d.group);
            config
                .router
                .retry_policy_of(group)
                .for_status(status)
                .unwrap_or(config.router.num_retries)
        });
    while let Some(&target) = replay.groups.get(replay.position) {
        let group = config.groups.get(target.group())?;
        let in_group = replay.tried.iter().any(|t| group.deployments.contains(t));
        if !in_group || replay.retries_used < allowed {
            let mut exclude = crate::tags::excluded(config, target.group(), &replay.tags)
                .unwrap_or_else(|_| group.deployments.clone());
            exclude.extend_from_slice(&replay.tried);
            if let Ok(reservation) =
                router::pick(config, host, target, replay.estimated_tokens, &exclude)
            {
                if in_group {
                    replay.retries_used += 1;
                } else {
                    replay.retries_used = 0;
                }
                replay.tried.push(reservation.deployment);
                // A fallback the body gave its own messages gets those instead.
                let own = replay
                    .fallback_messages
                    .iter()
                    .find(|(g, _)| *g == target.group())
                    .map(|(_, m)| crate::request::with_messages(&replay.body, m));
                let rewritten = match &own {
                    Some(body) => Some(InferenceBody::parse(replay.kind, body).ok()?),
                    None => None,
                };
                let request = rewritten.as_ref().unwrap_or(&original);
                let mut forward = attempt(config, host, request, reservation, None).ok()?;
                // The filter keeps the replay; this attempt needs no copy of its own.
                forward.envoy_retries = 0;
                return Some(forward);
            }
        }
        replay.position += 1;
    }
    None
}

/// Envoy's `response.code_details` for an upstream that reset or timed out after its headers
/// were sent on (the client's stream is cut; no filter can add to it any more).
pub fn is_reset_after_headers(code_details: &[u8]) -> bool {
    code_details.starts_with(b"upstream_reset_after_response_started")
        || code_details.starts_with(b"upstream_response_timeout")
}

/// Upstream answers that count as a deployment failure (cooldown, failover): server errors,
/// rate limiting, timeouts and connection failures; never the client's own 4xx.
pub fn is_deployment_failure(status: u16) -> bool {
    status >= 500 || status == 429
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn a_group_of_one_is_retried_on_its_deployment_by_envoy() {
        let cfg = r#"{"model_list":[
            {"model_name":"one","litellm_params":{"model":"openai/a","api_base":"http://a:1"}},
            {"model_name":"two","litellm_params":{"model":"openai/b","api_base":"http://b:1"}},
            {"model_name":"two","litellm_params":{"model":"openai/c","api_base":"http://c:1"}}],
          "router_settings":{"num_retries":1,"retry_policy":{"RateLimitErrorRetries":3,"TimeoutErrorRetries":0}}}"#;
        let c = parse(cfg.as_bytes(), &|_| None, 0).unwrap().0;
        let (one, two) = (&c.deployments[0], &c.deployments[1]);
        // 429 from the route's list, server errors but not timeouts: those listed.
        let (n, how) = same_deployment_retries(&c, one, None);
        assert_eq!(
            (n, how.retry_on, how.statuses),
            (3, RETRY_ON_429, Some("500,502,503"))
        );
        assert_eq!(
            same_deployment_retries(&c, one, Some(0)),
            (0, StatusRetries::OFF)
        );
        // Every kind: retry-on words only, no second header.
        let (n, how) = same_deployment_retries(&c, one, Some(2));
        assert_eq!((n, how.retry_on, how.statuses), (2, RETRY_ON_429_5XX, None));
        // More deployments: the filter fails over to another one; Envoy only reconnects.
        assert_eq!(
            same_deployment_retries(&c, two, None),
            (1, StatusRetries::OFF)
        );
        // A deployment's own num_retries wins over the router's, the request's over it.
        let cfg = r#"{"model_list":[{"model_name":"one","litellm_params":{"model":"openai/a","api_base":"http://a:1","num_retries":4}}]}"#;
        let c = parse(cfg.as_bytes(), &|_| None, 0).unwrap().0;
        let one = &c.deployments[0];
        assert_eq!(same_deployment_retries(&c, one, None).0, 4);
        assert_eq!(same_deployment_retries(&c, one, Some(1)).0, 1);
    }
}
