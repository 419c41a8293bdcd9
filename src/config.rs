//! The components' settings.
//!
//! Each setting has one name in two spellings: `FANOUT_TOKEN` as an
//! environment variable, `fanout_token` as a Spin application variable (Spin
//! allows only lower case there). The components read them through
//! `wasi:config/store`: Spin answers it from its variables (`spin up
//! --variable`, `SPIN_VARIABLE_*`, a SpinKube Secret, the managed host's
//! variables), and for other hosts the components are composed with one that
//! answers it from the environment. [`Config::from_lookup`] takes the lookup as
//! a function, so the parsing is tested without touching either.

use crate::api::{ApiError, ErrorKind};
use crate::egress::{Egress, HostPort};
use crate::store::{Bucket, S3Config};
use std::str::FromStr;
use std::time::Duration;

/// Every setting of every component, with its default.
///
/// Each component reads only the fields it needs; all are parsed up front so a
/// typo in any variable is reported on the first request, naming the variable.
/// The scraper's settings are limits: a request may ask for less, never more
/// (see [`crate::scrape::ScrapeRequest::settings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `FANOUT_MAX_REQUEST_BYTES`: the largest request body any route reads.
    pub max_request_bytes: usize,
    /// `FANOUT_TOKEN`: when set, every request must carry `Authorization: Bearer <token>`,
    /// and the coordinator sends it to the workers.
    pub token: Option<String>,
    /// `FANOUT_FETCH_TIMEOUT_MS`: the longest a request may let the scraper wait for one page.
    pub max_fetch_timeout: Duration,
    /// `FANOUT_FETCH_ATTEMPTS`: the most attempts per page a request may ask for.
    pub max_fetch_attempts: u32,
    /// `FANOUT_MAX_PAGE_BYTES`: the largest page body a request may let the scraper read.
    pub max_page_bytes: usize,
    /// `FANOUT_SCRAPE_CONCURRENCY`: the most pages a request may have fetched at once.
    pub max_scrape_concurrency: usize,
    /// `FANOUT_SCRAPE_DEADLINE_MS`: the longest a request may let one scrape batch run.
    pub max_scrape_deadline: Duration,
    /// `FANOUT_MAX_OUTPUT_BYTES`: the most a request may let one page's extracted text add up to.
    pub max_output_bytes: usize,
    /// `FANOUT_MAX_REDIRECTS`: the most redirects a request may let the scraper follow.
    pub max_redirects: usize,
    /// `FANOUT_USER_AGENT`: the scraper's default `User-Agent`.
    pub user_agent: String,
    /// `FANOUT_RESPECT_ROBOTS`: when true, robots.txt is obeyed whatever the request says.
    pub respect_robots: bool,
    /// `FANOUT_SOURCE_TIMEOUT_MS`: how long the transform worker waits for a range of its source file.
    pub source_timeout: Duration,
    /// `FANOUT_MAX_URLS`: the most URLs one scrape or coordinate request may name.
    pub max_urls: usize,
    /// `FANOUT_ALLOW_PRIVATE_HOSTS`: when true, the scraper may fetch loopback,
    /// private and link-local addresses (off by default: see [`crate::egress`]).
    pub allow_private_hosts: bool,
    /// `FANOUT_PRIVATE_HOSTS`: private `host[:port]`s that may be fetched
    /// though others may not (comma-separated): an internal object store, say.
    pub private_hosts: Vec<HostPort>,
    /// `FANOUT_SCRAPE_URL`: the scrape worker's `/scrape` endpoint, for the coordinator.
    pub scrape_url: Option<String>,
    /// `FANOUT_TRANSFORM_URL`: the transform worker's `/transform` endpoint, for the coordinator.
    pub transform_url: Option<String>,
    /// `FANOUT_WORKER_CONCURRENCY`: worker invocations the coordinator runs at once.
    pub worker_concurrency: usize,
    /// `FANOUT_WORKER_TIMEOUT_MS`: how long the coordinator waits for one worker invocation.
    pub worker_timeout: Duration,
    /// `FANOUT_WORKER_ATTEMPTS`: how many times the coordinator tries one invocation.
    pub worker_attempts: u32,
    /// `FANOUT_MAX_WORKER_RESPONSE_BYTES`: the largest worker answer the coordinator reads.
    pub max_worker_response_bytes: usize,
    /// `FANOUT_BATCH_SIZE`: URLs per scrape invocation, unless the request says otherwise.
    pub batch_size: usize,
    /// `FANOUT_CHUNK_BYTES`: CSV bytes per transform invocation, unless the request says otherwise.
    pub chunk_bytes: usize,
    /// `FANOUT_MIN_CHUNK_BYTES`: the smallest `chunk_bytes` a request may ask for.
    pub min_chunk_bytes: usize,
    /// `FANOUT_MAX_JOB_BYTES`: the most CSV bytes one coordinated job may stream in.
    pub max_job_bytes: u64,
    /// `FANOUT_MAX_JOB_URLS`: the most URLs one coordinated scrape job may name.
    pub max_job_urls: usize,
    /// `FANOUT_JOB_DEADLINE_MS`: the longest a coordinated job may run (and its default deadline).
    pub job_deadline: Duration,
    /// `FANOUT_WINDOW_BYTES`: memory for answers held back for input order (default and limit of `window_bytes`).
    pub window_bytes: usize,
    /// `FANOUT_JOB_MEMORY_BYTES`: memory one coordinated job may hold: its window, and a unit
    /// and an answer for each call in flight. Fewer calls run at once when more would pass it.
    pub job_memory_bytes: usize,
    /// `FANOUT_S3_ENDPOINT`, `FANOUT_S3_BUCKET`, `FANOUT_S3_REGION`, `FANOUT_S3_ACCESS_KEY_ID` and
    /// `FANOUT_S3_SECRET_ACCESS_KEY`: the bucket durable jobs live in (the coordinator's only).
    pub s3: Option<S3Config>,
    /// Where the bucket's objects are (`FANOUT_S3_ENDPOINT`, else the AWS origin of
    /// `FANOUT_S3_BUCKET`): the one origin a worker writes a durable job's units to.
    pub sink_origin: Option<url::Url>,
    /// `FANOUT_TICK_BUDGET_MS`: the longest one tick of a durable job may run.
    pub tick_budget: Duration,
    /// `FANOUT_DURABLE_DEADLINE_MS`: the longest a durable job may run (and its default deadline).
    pub durable_deadline: Duration,
    /// `FANOUT_LEASE_MS`: how long a unit claimed by a tick stays its own.
    pub lease: Duration,
    /// `FANOUT_TICK_TOKEN`: a token that allows ticking durable jobs (`?token=` on the tick routes) and nothing else.
    pub tick_token: Option<String>,
    /// `FANOUT_MAX_PART_BYTES`: the largest part a worker writes for one unit of a durable job.
    pub max_part_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_request_bytes: 16 * 1024 * 1024,
            token: None,
            max_fetch_timeout: Duration::from_secs(30),
            max_fetch_attempts: 5,
            max_page_bytes: 10 * 1024 * 1024,
            max_scrape_concurrency: 64,
            max_scrape_deadline: Duration::from_secs(300),
            max_output_bytes: 4 * 1024 * 1024,
            max_redirects: 20,
            user_agent: concat!("fanout-scrape/", env!("CARGO_PKG_VERSION")).to_owned(),
            respect_robots: false,
            source_timeout: Duration::from_secs(60),
            max_urls: 10_000,
            allow_private_hosts: false,
            private_hosts: Vec::new(),
            scrape_url: None,
            transform_url: None,
            worker_concurrency: 8,
            worker_timeout: Duration::from_secs(120),
            worker_attempts: 3,
            max_worker_response_bytes: 16 * 1024 * 1024,
            batch_size: 50,
            chunk_bytes: 1024 * 1024,
            min_chunk_bytes: 64 * 1024,
            max_job_bytes: 64 * 1024 * 1024 * 1024,
            max_job_urls: 1_000_000,
            job_deadline: Duration::from_secs(3600),
            window_bytes: 32 * 1024 * 1024,
            job_memory_bytes: 256 * 1024 * 1024,
            s3: None,
            sink_origin: None,
            tick_budget: Duration::from_secs(25),
            durable_deadline: Duration::from_secs(7 * 24 * 3600),
            lease: Duration::from_secs(60),
            tick_token: None,
            max_part_bytes: 32 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Reads the configuration from a configuration store that names each
    /// setting in lower case (`fanout_token`), as Spin's variables and
    /// `wasi:config/store` do. A store that fails to answer fails the whole
    /// configuration: a token or a limit that could not be read must not fall
    /// back to its default.
    pub fn from_store(get: impl Fn(&str) -> Result<Option<String>, String>) -> Result<Config, ApiError> {
        let failed = std::cell::RefCell::new(None);
        let config = Config::from_lookup(|name| {
            let key = name.to_ascii_lowercase();
            get(&key).unwrap_or_else(|e| {
                failed.borrow_mut().get_or_insert(format!("the configuration store failed to read {key}: {e}"));
                None
            })
        });
        match failed.into_inner() {
            Some(why) => Err(ApiError::new(ErrorKind::Config, why)),
            None => config,
        }
    }

    /// The name of every setting, as an environment variable (`FANOUT_TOKEN`).
    pub fn settings() -> Vec<String> {
        let names = std::cell::RefCell::new(Vec::<String>::new());
        let _ = Config::from_lookup(|name| {
            let mut names = names.borrow_mut();
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
            None
        });
        names.into_inner()
    }

    /// Reads the configuration through `lookup`, which takes a setting's name as
    /// an environment variable (`FANOUT_TOKEN`).
    ///
    /// Unset and empty variables take their defaults; a value that does not
    /// parse is an error naming the variable and the value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ApiError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let d = Config::default();
        let (s3, sink_origin) = s3(&get)?;
        Ok(Config {
            max_request_bytes: positive(&get, "FANOUT_MAX_REQUEST_BYTES", d.max_request_bytes)?,
            token: token("FANOUT_TOKEN", lookup("FANOUT_TOKEN"))?,
            max_fetch_timeout: millis(&get, "FANOUT_FETCH_TIMEOUT_MS", d.max_fetch_timeout)?,
            max_fetch_attempts: positive(&get, "FANOUT_FETCH_ATTEMPTS", d.max_fetch_attempts)?,
            max_page_bytes: positive(&get, "FANOUT_MAX_PAGE_BYTES", d.max_page_bytes)?,
            max_scrape_concurrency: positive(&get, "FANOUT_SCRAPE_CONCURRENCY", d.max_scrape_concurrency)?,
            max_scrape_deadline: millis(&get, "FANOUT_SCRAPE_DEADLINE_MS", d.max_scrape_deadline)?,
            max_output_bytes: positive(&get, "FANOUT_MAX_OUTPUT_BYTES", d.max_output_bytes)?,
            max_redirects: positive(&get, "FANOUT_MAX_REDIRECTS", d.max_redirects)?,
            user_agent: get("FANOUT_USER_AGENT").unwrap_or(d.user_agent),
            respect_robots: boolean(&get, "FANOUT_RESPECT_ROBOTS", d.respect_robots)?,
            source_timeout: millis(&get, "FANOUT_SOURCE_TIMEOUT_MS", d.source_timeout)?,
            max_urls: positive(&get, "FANOUT_MAX_URLS", d.max_urls)?,
            allow_private_hosts: boolean(&get, "FANOUT_ALLOW_PRIVATE_HOSTS", d.allow_private_hosts)?,
            private_hosts: host_list(&get, "FANOUT_PRIVATE_HOSTS")?,
            scrape_url: get("FANOUT_SCRAPE_URL"),
            transform_url: get("FANOUT_TRANSFORM_URL"),
            worker_concurrency: positive(&get, "FANOUT_WORKER_CONCURRENCY", d.worker_concurrency)?,
            worker_timeout: millis(&get, "FANOUT_WORKER_TIMEOUT_MS", d.worker_timeout)?,
            worker_attempts: positive(&get, "FANOUT_WORKER_ATTEMPTS", d.worker_attempts)?,
            max_worker_response_bytes: positive(&get, "FANOUT_MAX_WORKER_RESPONSE_BYTES", d.max_worker_response_bytes)?,
            batch_size: positive(&get, "FANOUT_BATCH_SIZE", d.batch_size)?,
            chunk_bytes: positive(&get, "FANOUT_CHUNK_BYTES", d.chunk_bytes)?,
            min_chunk_bytes: positive(&get, "FANOUT_MIN_CHUNK_BYTES", d.min_chunk_bytes)?,
            max_job_bytes: positive(&get, "FANOUT_MAX_JOB_BYTES", d.max_job_bytes)?,
            max_job_urls: positive(&get, "FANOUT_MAX_JOB_URLS", d.max_job_urls)?,
            job_deadline: millis(&get, "FANOUT_JOB_DEADLINE_MS", d.job_deadline)?,
            window_bytes: positive(&get, "FANOUT_WINDOW_BYTES", d.window_bytes)?,
            job_memory_bytes: positive(&get, "FANOUT_JOB_MEMORY_BYTES", d.job_memory_bytes)?,
            s3,
            sink_origin,
            tick_budget: millis(&get, "FANOUT_TICK_BUDGET_MS", d.tick_budget)?,
            durable_deadline: millis(&get, "FANOUT_DURABLE_DEADLINE_MS", d.durable_deadline)?,
            lease: millis(&get, "FANOUT_LEASE_MS", d.lease)?,
            tick_token: token("FANOUT_TICK_TOKEN", lookup("FANOUT_TICK_TOKEN"))?,
            max_part_bytes: positive(&get, "FANOUT_MAX_PART_BYTES", d.max_part_bytes)?,
        })
    }

    /// What caller-supplied URLs may reach.
    pub fn egress(&self) -> Egress {
        Egress { allow_private: self.allow_private_hosts, private_hosts: self.private_hosts.clone() }
    }

    /// Checks an `Authorization` header value against the shared token, if one is set.
    ///
    /// The scheme is matched without regard to case (RFC 9110, 11.1), as
    /// `Bearer`, `bearer` or `BEARER`, followed by one or more spaces.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = authorization
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, credentials)| credentials.trim_start_matches(' '));
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorKind::Unauthorized,
                "missing or wrong shared token: send Authorization: Bearer <FANOUT_TOKEN>",
            ))
        }
    }
}

impl Config {
    /// Whether `token` (a tick route's `?token=`) is the tick token, which allows ticking and nothing else.
    pub fn authorize_tick(&self, token: Option<&str>) -> bool {
        match (&self.tick_token, token) {
            (Some(want), Some(given)) => constant_time_eq(given.as_bytes(), want.as_bytes()),
            _ => false,
        }
    }
}

/// `FANOUT_TOKEN`: unset or empty turns the check off; a value of only
/// whitespace is a mistake (it would turn the check off without saying so).
/// An option a request may set: `requested`, or `default` (at most `limit`)
/// when not given. Under 1 or over `limit` (set by the operator's `variable`)
/// is a 400 naming the option, `field` as the request spells it.
pub fn within<T>(field: &str, requested: Option<T>, default: T, limit: T, variable: &str) -> Result<T, ApiError>
where
    T: PartialOrd + Copy + std::fmt::Display + Default,
{
    match requested {
        None => Ok(if default > limit { limit } else { default }),
        Some(v) if v <= T::default() => Err(ApiError::bad_request(format!("{field} must be at least 1"))),
        Some(v) if v > limit => {
            Err(ApiError::bad_request(format!("{field}={v} is over this deployment's limit of {limit} ({variable})")))
        }
        Some(v) => Ok(v),
    }
}

fn token(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) if v.trim().is_empty() => Err(invalid(name, &v, "a token (it is only whitespace)")),
        Some(v) => Ok(Some(v)),
    }
}

/// The bucket (when `FANOUT_S3_BUCKET` and both keys are set), and where its
/// objects are (the origin workers may write to, known without the keys).
fn s3(get: &impl Fn(&str) -> Option<String>) -> Result<(Option<S3Config>, Option<url::Url>), ApiError> {
    let endpoint = match get("FANOUT_S3_ENDPOINT") {
        None => None,
        Some(v) => match url::Url::parse(v.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
            _ => return Err(invalid("FANOUT_S3_ENDPOINT", &v, "an http(s) URL")),
        },
    };
    let bucket = get("FANOUT_S3_BUCKET").map(|b| b.trim().to_owned());
    let region = get("FANOUT_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned());
    let keys = (get("FANOUT_S3_ACCESS_KEY_ID"), get("FANOUT_S3_SECRET_ACCESS_KEY"));
    let config = match (bucket, keys) {
        (Some(bucket), (Some(access_key_id), Some(secret_access_key))) => {
            let config = S3Config { endpoint: endpoint.clone(), bucket, region, access_key_id, secret_access_key };
            Bucket::new(&config).map_err(|e| ApiError::new(ErrorKind::Config, format!("FANOUT_S3_*: {e}")))?;
            Some(config)
        }
        (_, (Some(_), None)) => return Err(missing("FANOUT_S3_ACCESS_KEY_ID", "FANOUT_S3_SECRET_ACCESS_KEY")),
        (_, (None, Some(_))) => return Err(missing("FANOUT_S3_SECRET_ACCESS_KEY", "FANOUT_S3_ACCESS_KEY_ID")),
        (None, (Some(_), Some(_))) => return Err(missing("FANOUT_S3_ACCESS_KEY_ID", "FANOUT_S3_BUCKET")),
        (_, (None, None)) => None,
    };
    let origin = match (endpoint, get("FANOUT_S3_BUCKET")) {
        (Some(endpoint), _) => Some(endpoint),
        (None, Some(bucket)) => url::Url::parse(&format!(
            "https://{}.s3.{}.amazonaws.com/",
            bucket.trim(),
            get("FANOUT_S3_REGION").as_deref().unwrap_or("us-east-1")
        ))
        .ok(),
        (None, None) => None,
    };
    Ok((config, origin))
}

fn missing(set: &str, unset: &str) -> ApiError {
    ApiError::new(ErrorKind::Config, format!("{set} is set but {unset} is not"))
}

/// Compares without an early exit so the time taken says nothing about where a guess went wrong.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn invalid(name: &str, value: &str, expected: &str) -> ApiError {
    ApiError::new(ErrorKind::Config, format!("the setting {name}={value:?} is not {expected}"))
}

fn positive<T>(get: &impl Fn(&str) -> Option<String>, name: &str, default: T) -> Result<T, ApiError>
where
    T: FromStr + PartialOrd + Default,
{
    match get(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<T>() {
            Ok(n) if n > T::default() => Ok(n),
            _ => Err(invalid(name, &v, "a positive whole number")),
        },
    }
}

fn millis(get: &impl Fn(&str) -> Option<String>, name: &str, default: Duration) -> Result<Duration, ApiError> {
    let ms = positive(get, name, default.as_millis() as u64)?;
    Ok(Duration::from_millis(ms))
}

fn host_list(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Vec<HostPort>, ApiError> {
    let Some(v) = get(name) else { return Ok(Vec::new()) };
    v.split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|e| HostPort::parse(e).map_err(|why| invalid(name, &v, &format!("a list of host[:port] ({why})"))))
        .collect()
}

fn boolean(get: &impl Fn(&str) -> Option<String>, name: &str, default: bool) -> Result<bool, ApiError> {
    match get(name) {
        None => Ok(default),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(invalid(name, &v, "a boolean (true/false, 1/0, yes/no, on/off)")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ApiError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn a_store_names_settings_in_lower_case_and_its_failures_fail_closed() {
        let store = |key: &str| match key {
            "fanout_token" => Ok(Some("s3cret".to_owned())),
            "fanout_batch_size" => Ok(Some("7".to_owned())),
            _ => Ok(None),
        };
        let c = Config::from_store(store).unwrap();
        assert_eq!((c.batch_size, c.token.is_some()), (7, true));
        let failing = |key: &str| match key {
            "fanout_token" => Err("upstream: vault sealed".to_owned()),
            _ => Ok(None),
        };
        let e = Config::from_store(failing).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert_eq!(e.message(), "the configuration store failed to read fanout_token: upstream: vault sealed");
    }

    #[test]
    fn every_setting_is_listed_once() {
        let settings = Config::settings();
        for name in ["FANOUT_TOKEN", "FANOUT_TICK_TOKEN", "FANOUT_S3_SECRET_ACCESS_KEY", "FANOUT_WORKER_ATTEMPTS"] {
            assert_eq!(settings.iter().filter(|s| *s == name).count(), 1, "{name} in {settings:?}");
        }
        assert_eq!(settings.len(), 39, "{settings:?}");
    }

    #[test]
    fn unset_and_empty_take_defaults() {
        assert_eq!(config(&[]).unwrap(), Config::default());
        assert_eq!(config(&[("FANOUT_TOKEN", ""), ("FANOUT_BATCH_SIZE", " ")]).unwrap(), Config::default());
    }

    #[test]
    fn values_parse() {
        let c = config(&[
            ("FANOUT_MAX_REQUEST_BYTES", "1024"),
            ("FANOUT_WORKER_TIMEOUT_MS", "250"),
            ("FANOUT_ALLOW_PRIVATE_HOSTS", "yes"),
            ("FANOUT_SCRAPE_URL", "http://127.0.0.1:1/scrape"),
        ])
        .unwrap();
        assert_eq!(c.max_request_bytes, 1024);
        assert_eq!(c.worker_timeout, Duration::from_millis(250));
        assert!(c.allow_private_hosts);
        assert_eq!(c.scrape_url.as_deref(), Some("http://127.0.0.1:1/scrape"));
        let c = config(&[("FANOUT_PRIVATE_HOSTS", " 127.0.0.1:8333, minio.internal ,")]).unwrap();
        let names: Vec<String> = c.private_hosts.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["127.0.0.1:8333", "minio.internal"]);
        assert!(c.egress().check("http://127.0.0.1:8333/b/k").is_ok());
        assert!(c.egress().check("http://127.0.0.1:8334/b/k").is_err());
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("FANOUT_BATCH_SIZE", "0"),
            ("FANOUT_BATCH_SIZE", "-3"),
            ("FANOUT_CHUNK_BYTES", "1MB"),
            ("FANOUT_ALLOW_PRIVATE_HOSTS", "maybe"),
            ("FANOUT_PRIVATE_HOSTS", "127.0.0.1:8333,http://x/"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.message().contains(name) && err.message().contains(value), "{}", err.message());
        }
    }

    #[test]
    fn the_bucket_is_all_or_nothing() {
        assert_eq!(config(&[]).unwrap().s3, None);
        let c = config(&[
            ("FANOUT_S3_BUCKET", "jobs"),
            ("FANOUT_S3_ENDPOINT", "http://127.0.0.1:8333"),
            ("FANOUT_S3_ACCESS_KEY_ID", "AKID"),
            ("FANOUT_S3_SECRET_ACCESS_KEY", "s3cret"),
        ])
        .unwrap();
        let s3 = c.s3.unwrap();
        assert_eq!((s3.bucket.as_str(), s3.region.as_str()), ("jobs", "us-east-1"));
        assert!(!format!("{s3:?}").contains("s3cret"), "the secret stays out of logs");
        // A worker knows where the bucket is, without its keys.
        let worker = config(&[("FANOUT_S3_ENDPOINT", "http://127.0.0.1:8333")]).unwrap();
        assert_eq!((worker.s3, worker.sink_origin.unwrap().as_str()), (None, "http://127.0.0.1:8333/"));
        let aws = config(&[("FANOUT_S3_BUCKET", "jobs"), ("FANOUT_S3_REGION", "eu-west-1")]).unwrap();
        assert_eq!(aws.sink_origin.unwrap().as_str(), "https://jobs.s3.eu-west-1.amazonaws.com/");
        assert_eq!(config(&[]).unwrap().sink_origin, None);
        for (vars, needle) in [
            (vec![("FANOUT_S3_ACCESS_KEY_ID", "a"), ("FANOUT_S3_SECRET_ACCESS_KEY", "b")], "FANOUT_S3_BUCKET is not"),
            (vec![("FANOUT_S3_BUCKET", "jobs"), ("FANOUT_S3_ACCESS_KEY_ID", "a")], "FANOUT_S3_SECRET_ACCESS_KEY"),
            (
                vec![
                    ("FANOUT_S3_BUCKET", "jobs"),
                    ("FANOUT_S3_ENDPOINT", "ftp://x"),
                    ("FANOUT_S3_ACCESS_KEY_ID", "a"),
                    ("FANOUT_S3_SECRET_ACCESS_KEY", "b"),
                ],
                "FANOUT_S3_ENDPOINT",
            ),
        ] {
            let err = config(&vars).unwrap_err();
            assert!(err.message().contains(needle), "{}", err.message());
        }
    }

    #[test]
    fn token_is_checked_only_when_set() {
        assert!(config(&[]).unwrap().authorize(None).is_ok());
        let c = config(&[("FANOUT_TOKEN", "s3cret")]).unwrap();
        assert!(c.authorize(Some("Bearer s3cret")).is_ok());
        assert!(c.authorize(Some("bearer s3cret")).is_ok());
        assert!(c.authorize(Some("BEARER  s3cret")).is_ok());
        assert_eq!(c.authorize(Some("Basic s3cret")).unwrap_err().status(), 401);
        assert_eq!(c.authorize(Some("Bearers3cret")).unwrap_err().status(), 401);
        let err = config(&[("FANOUT_TOKEN", "  \t ")]).unwrap_err();
        assert_eq!(
            (err.kind(), err.message().contains("FANOUT_TOKEN")),
            (ErrorKind::Config, true),
            "{}",
            err.message()
        );
        assert_eq!(c.authorize(Some("Bearer s3cre")).unwrap_err().status(), 401);
        assert_eq!(c.authorize(Some("s3cret")).unwrap_err().status(), 401);
        assert_eq!(c.authorize(None).unwrap_err().status(), 401);
        assert!(!c.authorize_tick(Some("s3cret")), "the shared token is not a tick token");
        let t = config(&[("FANOUT_TOKEN", "s3cret"), ("FANOUT_TICK_TOKEN", "tick")]).unwrap();
        assert!(t.authorize_tick(Some("tick")));
        assert!(!t.authorize_tick(Some("tic")) && !t.authorize_tick(None));
    }
}
