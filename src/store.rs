//! An S3-compatible bucket, where durable jobs keep their state and results.
//!
//! Requests are signed here and sent by whoever holds them: the coordinator
//! component and the CLI (over HTTP), the simulation (not at all). Signing is
//! SigV4 query authentication through `rusty-s3`, which does no I/O, so every
//! request is a URL plus the headers it must carry. The same signing makes the
//! presigned URLs that workers write their parts through: workers hold no
//! credentials, only a URL for one object, one method and a short time.
//!
//! Addressing is path style (`ENDPOINT/BUCKET/KEY`) whenever an endpoint is
//! configured, as S3-compatible servers expect; virtual-host style on AWS.

use rusty_s3::{Credentials, S3Action, UrlStyle};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::time::Duration;
use url::Url;

/// Where the bucket is and how to sign for it: `FANOUT_S3_*` in the
/// coordinator's configuration, `AWS_*` for the CLI.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The server, for S3-compatible stores (`http://127.0.0.1:8333`); AWS's regional endpoint when unset.
    pub endpoint: Option<Url>,
    /// The bucket's name.
    pub bucket: String,
    /// The region signed for (`us-east-1` when unset; most S3-compatible servers ignore it).
    pub region: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl fmt::Debug for S3Config {
    /// Everything but the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint.as_ref().map(Url::as_str))
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A write's condition: what makes `PUT` an atomic create or compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// Write whatever is there.
    None,
    /// Only create: `If-None-Match: *`; a 412 when the key exists.
    Create,
    /// Only replace the version with this ETag: `If-Match`; a 412 when it changed or is gone.
    Replace(String),
}

/// One request to the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// `GET` an object, or a byte range of it.
    Get {
        /// The key.
        key: &'a str,
        /// Bytes wanted, when not all.
        range: Option<Range<u64>>,
    },
    /// `HEAD` an object: its size and ETag.
    Head {
        /// The key.
        key: &'a str,
    },
    /// `PUT` an object.
    Put {
        /// The key.
        key: &'a str,
        /// The write's condition.
        cond: Cond,
    },
    /// `DELETE` an object.
    Delete {
        /// The key.
        key: &'a str,
    },
    /// `ListObjectsV2`: up to 1,000 keys under `prefix`, after `after`.
    List {
        /// The keys' common start.
        prefix: &'a str,
        /// List keys after this one (the last key of the previous page).
        after: Option<&'a str>,
    },
    /// Starts a multipart upload.
    CreateUpload {
        /// The key.
        key: &'a str,
    },
    /// Uploads part `part` (from 1) of a multipart upload.
    UploadPart {
        /// The key.
        key: &'a str,
        /// The upload's id.
        upload_id: &'a str,
        /// The part's number, from 1.
        part: u16,
    },
    /// Ends a multipart upload; its body is [`complete_upload_body`].
    CompleteUpload {
        /// The key.
        key: &'a str,
        /// The upload's id.
        upload_id: &'a str,
    },
    /// Abandons a multipart upload.
    AbortUpload {
        /// The key.
        key: &'a str,
        /// The upload's id.
        upload_id: &'a str,
    },
}

/// A signed request: send `method` to `url` with exactly these `headers` (and the body, if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// `GET`, `HEAD`, `PUT`, `POST` or `DELETE`.
    pub method: &'static str,
    /// The URL, signature included.
    pub url: String,
    /// Headers the request must carry: signed ones, and `Range`.
    pub headers: Vec<(&'static str, String)>,
}

/// A bucket to sign requests for.
#[derive(Clone, Debug)]
pub struct Bucket {
    bucket: rusty_s3::Bucket,
    credentials: Credentials,
}

impl Bucket {
    /// The bucket `config` names; an error says which setting is wrong.
    pub fn new(config: &S3Config) -> Result<Bucket, String> {
        let (endpoint, style) = match &config.endpoint {
            Some(url) => (url.clone(), UrlStyle::Path),
            None => {
                let aws = format!("https://s3.{}.amazonaws.com", config.region);
                (Url::parse(&aws).map_err(|e| format!("region {:?}: {e}", config.region))?, UrlStyle::VirtualHost)
            }
        };
        let bucket = rusty_s3::Bucket::new(endpoint, style, config.bucket.clone(), config.region.clone())
            .map_err(|e| format!("bucket {:?} at {:?}: {e}", config.bucket, config.endpoint))?;
        Ok(Bucket { bucket, credentials: Credentials::new(&config.access_key_id, &config.secret_access_key) })
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        self.bucket.name()
    }

    /// `s3://BUCKET/KEY`.
    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.name())
    }

    /// The key an `s3://BUCKET/KEY` URI names in this bucket; an error for
    /// another bucket or a URI without a key.
    pub fn key_of<'u>(&self, uri: &'u str) -> Result<&'u str, String> {
        let rest = uri.strip_prefix("s3://").ok_or_else(|| format!("{uri:?} is not an s3://BUCKET/KEY URI"))?;
        match rest.split_once('/') {
            // A `.` or `..` segment would be resolved away in a path-style URL: `s3://b/../other/k`
            // would sign a request for bucket `other`.
            Some((bucket, key)) if bucket == self.name() && key.split('/').any(|s| s == "." || s == "..") => {
                Err(format!("{uri:?} has a `.` or `..` segment, which no key of a bucket may have here"))
            }
            Some((bucket, key)) if bucket == self.name() && !key.is_empty() => Ok(key),
            Some((bucket, _)) if bucket != self.name() => {
                Err(format!("{uri:?} is in bucket {bucket:?}; this deployment's bucket is {:?}", self.name()))
            }
            _ => Err(format!("{uri:?} names no object: s3://{}/KEY", self.name())),
        }
    }

    /// Signs `op`, valid for `expires` from `now_ms` (milliseconds since the Unix epoch).
    pub fn sign(&self, op: &Op<'_>, expires: Duration, now_ms: u64) -> Signed {
        let time = jiff::Timestamp::from_millisecond(now_ms as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        // S3 takes between one second and seven days.
        let expires = expires.clamp(Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));
        let c = Some(&self.credentials);
        let b = &self.bucket;
        let mut headers = Vec::new();
        let (method, url) = match op {
            Op::Get { key, range } => {
                if let Some(r) = range {
                    headers.push(("range", format!("bytes={}-{}", r.start, r.end.saturating_sub(1))));
                }
                ("GET", b.get_object(c, key).sign_with_time(expires, &time))
            }
            Op::Head { key } => ("HEAD", b.head_object(c, key).sign_with_time(expires, &time)),
            Op::Put { key, cond } => {
                let mut action = b.put_object(c, key);
                let condition = match cond {
                    Cond::None => None,
                    Cond::Create => Some(("if-none-match", "*".to_owned())),
                    Cond::Replace(etag) => Some(("if-match", etag.clone())),
                };
                // Signed, so a holder of the URL cannot drop the condition.
                if let Some((name, value)) = condition {
                    action.headers_mut().insert(name, value.clone());
                    headers.push((name, value));
                }
                ("PUT", action.sign_with_time(expires, &time))
            }
            Op::Delete { key } => ("DELETE", b.delete_object(c, key).sign_with_time(expires, &time)),
            Op::List { prefix, after } => {
                let mut action = b.list_objects_v2(c);
                action.with_prefix(Cow::Borrowed(*prefix));
                if let Some(after) = after {
                    action.with_start_after(Cow::Borrowed(*after));
                }
                ("GET", action.sign_with_time(expires, &time))
            }
            Op::CreateUpload { key } => ("POST", b.create_multipart_upload(c, key).sign_with_time(expires, &time)),
            Op::UploadPart { key, upload_id, part } => {
                ("PUT", b.upload_part(c, key, *part, upload_id).sign_with_time(expires, &time))
            }
            Op::CompleteUpload { key, upload_id } => (
                "POST",
                b.complete_multipart_upload(c, key, upload_id, std::iter::empty::<&str>())
                    .sign_with_time(expires, &time),
            ),
            Op::AbortUpload { key, upload_id } => {
                ("DELETE", b.abort_multipart_upload(c, key, upload_id).sign_with_time(expires, &time))
            }
        };
        Signed { method, url: url.into(), headers }
    }
}

/// Why a request to the bucket failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// Worth trying again: no connection, a time-out, a 500 or 503.
    Transient(String),
    /// Would fail again: a 403, a 400.
    Permanent(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Transient(m) | StoreError::Permanent(m) => write!(f, "the bucket: {m}"),
        }
    }
}

impl StoreError {
    /// The error of a bucket's answer with `status` and `body` (an S3 XML error):
    /// transient for 408, 409 (a conflicting conditional write), 429 and 5xx.
    pub fn of_answer(status: u16, body: &[u8]) -> StoreError {
        let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
        let tag = |name: &str| {
            let open = format!("<{name}>");
            let start = text.find(&open)? + open.len();
            Some(text[start..].split('<').next()?.to_owned())
        };
        let what = match (tag("Code"), tag("Message")) {
            (Some(code), Some(message)) => format!("{status} {code}: {message}"),
            (Some(code), None) => format!("{status} {code}"),
            _ => format!("answered {status}"),
        };
        if matches!(status, 408 | 409 | 429) || status >= 500 {
            StoreError::Transient(what)
        } else {
            StoreError::Permanent(what)
        }
    }
}

/// `text` with every presigned URL's signature taken out, for messages: a URL
/// that grants access to an object must not end up in logs, answers or error
/// records. A signature's query is replaced by `?(signed)`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("X-Amz-") {
        // The query starts at the last `?` before the first signature parameter.
        let Some(q) = rest[..at].rfind('?') else {
            out.push_str(&rest[..at + 6]);
            rest = &rest[at + 6..];
            continue;
        };
        out.push_str(&rest[..q]);
        out.push_str("?(signed)");
        // A presigned query is made of these characters only.
        let query = |c: char| c.is_ascii_alphanumeric() || "%&=._~-?".contains(c);
        let end = rest[q..].find(|c: char| !query(c)).map_or(rest.len(), |e| q + e);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The keys, in order.
    pub keys: Vec<String>,
    /// Whether more keys follow the last one.
    pub truncated: bool,
}

/// Reads a `ListObjectsV2` answer.
pub fn parse_list(xml: &[u8]) -> Result<Listing, String> {
    let text = std::str::from_utf8(xml).map_err(|e| format!("the listing is not UTF-8: {e}"))?;
    let parsed = rusty_s3::actions::ListObjectsV2::parse_response(text)
        .map_err(|e| format!("the listing is not a ListObjectsV2 answer: {e}"))?;
    Ok(Listing {
        keys: parsed.contents.into_iter().map(|c| c.key).collect(),
        truncated: parsed.next_continuation_token.is_some(),
    })
}

/// Reads the upload id from a `CreateMultipartUpload` answer.
pub fn parse_upload_id(xml: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(xml).map_err(|e| format!("the answer is not UTF-8: {e}"))?;
    rusty_s3::actions::CreateMultipartUpload::parse_response(text)
        .map(|r| r.upload_id().to_owned())
        .map_err(|e| format!("the answer is not a CreateMultipartUpload answer: {e}"))
}

/// The body that completes a multipart upload of parts with these ETags, in order.
pub fn complete_upload_body(etags: &[String]) -> Vec<u8> {
    let bucket = rusty_s3::Bucket::new(Url::parse("http://unused/").expect("a URL"), UrlStyle::Path, "b", "r")
        .expect("a valid bucket");
    rusty_s3::actions::CompleteMultipartUpload::new(&bucket, None, "k", "u", etags.iter().map(String::as_str))
        .body()
        .into_bytes()
}

/// The MD5 an ETag holds, as lower-case hex: an object written in one `PUT`
/// (not multipart, not encrypted with KMS) has its content's MD5 as ETag on
/// S3 and on the S3-compatible servers fanout is tested with.
pub fn etag_md5(etag: &str) -> Option<String> {
    let hex = etag.trim().trim_start_matches("W/").trim_matches('"');
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> S3Config {
        S3Config {
            endpoint: Some(Url::parse("http://127.0.0.1:8333").unwrap()),
            bucket: "jobs".into(),
            region: "us-east-1".into(),
            access_key_id: "AKID".into(),
            secret_access_key: "SECRET".into(),
        }
    }

    fn bucket() -> Bucket {
        Bucket::new(&config()).unwrap()
    }

    #[test]
    fn the_secret_is_never_printed() {
        let printed = format!("{:?}", config());
        assert!(printed.contains("\"jobs\"") && printed.contains("http://127.0.0.1:8333/"), "{printed}");
        assert!(!printed.contains("SECRET"), "{printed}");
    }

    #[test]
    fn conditions_are_signed_so_a_url_holder_cannot_drop_them() {
        let b = bucket();
        let put =
            b.sign(&Op::Put { key: "jobs/a/parts/000001.ndjson", cond: Cond::Create }, Duration::from_secs(60), 0);
        assert_eq!(put.method, "PUT");
        assert!(put.url.starts_with("http://127.0.0.1:8333/jobs/jobs/a/parts/000001.ndjson?"), "{}", put.url);
        assert!(put.url.contains("X-Amz-SignedHeaders=host%3Bif-none-match"), "{}", put.url);
        assert_eq!(put.headers, [("if-none-match", "*".to_owned())]);
        let swap = b.sign(&Op::Put { key: "k", cond: Cond::Replace("\"e1\"".into()) }, Duration::from_secs(60), 0);
        assert!(swap.url.contains("if-match"), "{}", swap.url);
        assert_eq!(swap.headers, [("if-match", "\"e1\"".to_owned())]);
        let plain = b.sign(&Op::Put { key: "k", cond: Cond::None }, Duration::from_secs(60), 0);
        assert!(plain.headers.is_empty() && plain.url.contains("X-Amz-SignedHeaders=host&"), "{}", plain.url);
    }

    #[test]
    fn ranges_and_expiry() {
        let b = bucket();
        let get = b.sign(&Op::Get { key: "k", range: Some(10..20) }, Duration::from_millis(10), 1_700_000_000_000);
        assert_eq!(get.headers, [("range", "bytes=10-19".to_owned())]);
        assert!(get.url.contains("X-Amz-Expires=1&"), "at least a second: {}", get.url);
        assert!(get.url.contains("X-Amz-Date=20231114T221320Z"), "{}", get.url);
        let week = b.sign(&Op::Head { key: "k" }, Duration::from_secs(30 * 24 * 3600), 0);
        assert!(week.url.contains("X-Amz-Expires=604800"), "{}", week.url);
    }

    #[test]
    fn s3_uris_must_name_an_object_in_this_bucket() {
        let b = bucket();
        assert_eq!(b.key_of("s3://jobs/in/sales.csv"), Ok("in/sales.csv"));
        assert_eq!(b.key_of("s3://jobs/in/a..b/.x"), Ok("in/a..b/.x"), "dots inside a segment are a name");
        assert_eq!(b.uri("in/x"), "s3://jobs/in/x");
        for (uri, why) in [
            ("s3://other/x", "this deployment's bucket is \"jobs\""),
            ("s3://jobs/", "names no object"),
            ("s3://jobs", "names no object"),
            ("https://x/y", "not an s3://"),
            ("s3://jobs/../payroll/salaries.csv", "`..` segment"),
            ("s3://jobs/in/../../payroll/x", "`..` segment"),
            ("s3://jobs/./x", "`..` segment"),
            ("s3://jobs/in/..", "`..` segment"),
        ] {
            assert!(b.key_of(uri).unwrap_err().contains(why), "{uri}");
        }
    }

    #[test]
    fn signatures_are_taken_out_of_messages() {
        let url = bucket().sign(&Op::Get { key: "in/a.csv", range: None }, Duration::from_secs(60), 0).url;
        let message = format!("source {url}: answered 403, and \"{url}\" again");
        let redacted = redact(&message);
        assert_eq!(
            redacted,
            "source http://127.0.0.1:8333/jobs/in/a.csv?(signed): answered 403, and \"http://127.0.0.1:8333/jobs/in/a.csv?(signed)\" again"
        );
        assert_eq!(redact("https://x/?q=1 plain"), "https://x/?q=1 plain");
        assert_eq!(
            redact("header X-Amz-Date: 1, then http://h/k?X-Amz-Signature=abc."),
            "header X-Amz-Date: 1, then http://h/k?(signed)",
            "a header's name is not a query"
        );
    }

    #[test]
    fn listings_and_etags_are_read() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>jobs</Name><Prefix>active/</Prefix><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated><Contents><Key>active/a</Key><Size>0</Size></Contents><Contents><Key>active/b</Key><Size>0</Size></Contents><NextContinuationToken>t</NextContinuationToken></ListBucketResult>"#;
        assert_eq!(
            parse_list(xml).unwrap(),
            Listing { keys: vec!["active/a".into(), "active/b".into()], truncated: true }
        );
        assert!(parse_list(b"<html>").is_err());
        assert_eq!(
            etag_md5("\"22AF645D1859CB5CA6DA0C484F1F37EA\"").as_deref(),
            Some("22af645d1859cb5ca6da0c484f1f37ea")
        );
        assert_eq!(etag_md5("\"22af645d1859cb5ca6da0c484f1f37ea-2\""), None, "a multipart ETag is not an MD5");
        let e = StoreError::of_answer(403, b"<Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error>");
        assert_eq!(e, StoreError::Permanent("403 SignatureDoesNotMatch: no".into()));
        assert!(matches!(StoreError::of_answer(503, b""), StoreError::Transient(m) if m == "answered 503"));
        assert!(matches!(StoreError::of_answer(409, b""), StoreError::Transient(_)));
        let e = StoreError::of_answer(404, b"<Error><Code>NoSuchKey</Code></Error>");
        assert_eq!(e.to_string(), "the bucket: 404 NoSuchKey");
        for etag in ["\"22af645d1859cb5ca6da0c484f1f37e\"", "\"22af645d1859cb5ca6da0c484f1f37eg\""] {
            assert_eq!(etag_md5(etag), None, "{etag}: not 32 hex digits");
        }
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>jobs</Bucket><Key>in/a.csv</Key><UploadId>u-1</UploadId></InitiateMultipartUploadResult>"#;
        assert_eq!(parse_upload_id(xml).unwrap(), "u-1");
        assert!(parse_upload_id(b"<Error/>").is_err());
        let body = String::from_utf8(complete_upload_body(&["\"a\"".into(), "\"b\"".into()])).unwrap();
        assert!(body.contains("<ETag>&quot;b&quot;</ETag><PartNumber>2</PartNumber>"), "{body}");
    }
}
