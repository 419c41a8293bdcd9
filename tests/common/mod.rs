//! What the durable-job tests share: the test server's bucket, reached with
//! the test keys as the coordinator reaches it.

use fanout::store::{Bucket, Cond, Op, S3Config};
use fanout_testkit::client::{get, request};
use fanout_testkit::s3::{S3Server, ACCESS_KEY_ID, BUCKET, SECRET_ACCESS_KEY};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The bucket of a running [`S3Server`].
pub struct TestBucket(Bucket);

impl TestBucket {
    pub fn of(s3: &S3Server) -> TestBucket {
        TestBucket(
            Bucket::new(&S3Config {
                endpoint: Some(s3.endpoint().parse().expect("the server's endpoint is a URL")),
                bucket: BUCKET.into(),
                region: "us-east-1".into(),
                access_key_id: ACCESS_KEY_ID.into(),
                secret_access_key: SECRET_ACCESS_KEY.into(),
            })
            .expect("the test bucket's configuration is valid"),
        )
    }

    /// A presigned URL for `op`, valid for ten minutes.
    pub fn sign(&self, op: &Op<'_>) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64;
        self.0.sign(op, Duration::from_secs(600), now).url
    }

    /// The object at `key`, or `None` when there is none.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let resp = get(&self.sign(&Op::Get { key, range: None }));
        match resp.status {
            200 => Some(resp.body),
            404 => None,
            s => panic!("GET {key}: {s} {}", resp.text()),
        }
    }

    /// Writes `body` at `key`, replacing what is there.
    pub fn put(&self, key: &str, body: &[u8]) {
        let resp = request("PUT", &self.sign(&Op::Put { key, cond: Cond::None }), &[], body).unwrap();
        assert_eq!(resp.status, 200, "PUT {key}: {}", resp.text());
    }
}
