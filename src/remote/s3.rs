//! The one place that speaks HTTP to the object store: the few S3 calls ducksafe needs (PUT
//! with `If-None-Match`, multipart uploads, HEAD, GET, ListObjectsV2, DELETE), signed with
//! [`super::sigv4`], retried a bounded number of times.
//!
//! Invariants:
//! - Credentials come only from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_SESSION_TOKEN`); they are never read from the configuration and never put in a
//!   message: every text that leaves this file passes through [`Client::scrub`].
//! - Every byte uploaded carries its SHA-256 (`x-amz-checksum-sha256`, per part for a multipart
//!   upload), which the server checks before it accepts it; memory is bounded by
//!   `concurrency × PART_BYTES`.
//! - A multipart upload that fails is aborted here; one cut short by a crash is recorded by the
//!   caller ([`super`]) and aborted by the next run.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use base64_lite::encode as b64;
use sha2::{Digest, Sha256};
use ureq::http;

use super::sigv4::{self, EMPTY_SHA256};
use super::target::{Endpoint, Location};
use crate::error::{Error, RemoteFailure, Result};
use crate::failpoint;
use crate::files;

/// Size of one part of a multipart upload (S3's minimum is 5 MiB; R2 wants equal parts).
pub const PART_BYTES: u64 = 8 << 20;

/// What the store says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The object's name under the prefix.
    pub name: String,
    pub size: u64,
    pub e_tag: Option<String>,
}

/// A file uploaded.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// SHA-256 of the bytes read and sent.
    pub sha256: String,
    pub parts: u64,
    /// False when a single PUT sent with `If-None-Match: *` found the key taken: nothing was
    /// written (the caller checks that what is there is what it meant to write).
    pub created: bool,
}

/// How a conditional put ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Made,
    /// The key already existed: nothing was written.
    AlreadyThere,
}

/// How a delete ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// Refused with AccessDenied: an Object Lock retention (or a bucket policy) keeps it.
    Retained,
}

struct Credentials {
    access_key: String,
    secret_key: String,
    token: Option<String>,
}

pub struct Client {
    agent: ureq::Agent,
    /// `https://host[:port]` (or `http://` when the endpoint says so).
    base: String,
    host: String,
    /// Path-style (`/bucket/key`): a custom endpoint. Virtual-hosted (`bucket.s3…`): AWS.
    path_style: bool,
    region: String,
    location: Location,
    credentials: Option<Credentials>,
    concurrency: usize,
    retries: u32,
}

/// One HTTP answer, its body read when small.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Client {
    /// Builds the client from the location and the environment's credentials. Sends nothing.
    pub fn new(
        location: &Location,
        endpoint: Option<&Endpoint>,
        region: Option<&str>,
        concurrency: usize,
    ) -> Client {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let region = region
            .map(str::to_owned)
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let (base, host, path_style) = if let Some(e) = endpoint {
            let host = e.url.split_once("://").map_or("", |(_, h)| h).to_owned();
            (e.url.clone(), host, true)
        } else {
            let host = format!("{}.s3.{region}.amazonaws.com", location.bucket);
            (format!("https://{host}"), host, false)
        };
        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key), Some(secret_key)) => Some(Credentials {
                access_key,
                secret_key,
                token: env("AWS_SESSION_TOKEN"),
            }),
            _ => None,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_send_body(Some(Duration::from_secs(300)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .build()
            .into();
        let retries = env("DUCKSAFE_REMOTE_RETRIES")
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        Client {
            agent,
            base,
            host,
            path_style,
            region,
            location: location.clone(),
            credentials,
            concurrency: concurrency.max(1),
            retries,
        }
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The text with every secret value replaced: applied to every message made here.
    pub fn scrub(&self, text: &str) -> String {
        let mut t = text.to_owned();
        if let Some(c) = &self.credentials {
            for s in std::iter::once(&c.secret_key).chain(c.token.as_ref()) {
                if s.len() >= 4 {
                    t = t.replace(s.as_str(), "***");
                }
            }
        }
        t
    }

    fn fail(&self, failure: RemoteFailure, why: &str) -> Error {
        Error::Remote {
            failure,
            url: self.location.url(),
            why: self.scrub(why),
        }
    }

    /// The request path for `name` (`None`: the bucket itself), encoded.
    fn path(&self, name: Option<&str>) -> String {
        let key = name.map(|n| self.location.key(n));
        match (self.path_style, key) {
            (true, Some(k)) => format!("/{}/{}", self.location.bucket, sigv4::uri_encode(&k, true)),
            (true, None) => format!("/{}", self.location.bucket),
            (false, Some(k)) => format!("/{}", sigv4::uri_encode(&k, true)),
            (false, None) => "/".to_owned(),
        }
    }

    /// Sends one signed request, retrying transport failures, 5xx and 429 up to the limit.
    fn send(
        &self,
        method: &str,
        name: Option<&str>,
        query: &[(String, String)],
        extra: &[(String, String)],
        body: &[u8],
        what: &str,
    ) -> Result<Answer> {
        self.send_hashed(method, name, query, extra, body, None, what)
    }

    /// [`Client::send`] with the body's SHA-256 already computed (for its checksum header):
    /// the signature's payload hash is the same digest, not a second pass over the bytes.
    #[allow(clippy::too_many_arguments)]
    fn send_hashed(
        &self,
        method: &str,
        name: Option<&str>,
        query: &[(String, String)],
        extra: &[(String, String)],
        body: &[u8],
        body_sha256: Option<&[u8]>,
        what: &str,
    ) -> Result<Answer> {
        let Some(creds) = &self.credentials else {
            return Err(self.fail(
                RemoteFailure::Auth,
                "no credentials: set `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` in the environment",
            ));
        };
        let payload_sha = match body_sha256 {
            _ if body.is_empty() => EMPTY_SHA256.to_owned(),
            Some(d) => files::hex(d),
            None => files::hex(&Sha256::digest(body)),
        };
        let path = self.path(name);
        let mut attempt = 0;
        loop {
            let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
            let mut headers: Vec<(String, String)> = vec![
                ("host".into(), self.host.clone()),
                ("x-amz-date".into(), amz_date.clone()),
                ("x-amz-content-sha256".into(), payload_sha.clone()),
            ];
            if let Some(t) = &creds.token {
                headers.push(("x-amz-security-token".into(), t.clone()));
            }
            headers.extend(extra.iter().cloned());
            let auth = sigv4::authorization(
                &sigv4::Request {
                    method,
                    path: &path,
                    query,
                    headers: &headers,
                    payload_sha256: &payload_sha,
                },
                &creds.access_key,
                &creds.secret_key,
                &self.region,
                &amz_date,
            );
            let q = sigv4::canonical_query(query);
            let uri = if q.is_empty() {
                format!("{}{path}", self.base)
            } else {
                format!("{}{path}?{q}", self.base)
            };
            let mut rb = http::Request::builder().method(method).uri(&uri);
            for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
                rb = rb.header(k.as_str(), v.as_str());
            }
            rb = rb.header("authorization", auth);
            let req = rb
                .body(body)
                .map_err(|e| Error::Internal(format!("cannot build a request: {e}")))?;
            let outcome = self
                .agent
                .run(req)
                .map_err(|e| e.to_string())
                .and_then(|mut r| {
                    let status = r.status().as_u16();
                    let headers = r.headers().clone();
                    let body = if method == "HEAD" {
                        Vec::new()
                    } else {
                        r.body_mut()
                            .with_config()
                            .limit(64 << 20)
                            .read_to_vec()
                            .map_err(|e| e.to_string())?
                    };
                    Ok(Answer {
                        status,
                        headers,
                        body,
                    })
                });
            let retry = match &outcome {
                Err(_) => true,
                Ok(a) => a.status >= 500 || a.status == 429,
            };
            if !retry || attempt >= self.retries {
                return match outcome {
                    Ok(a) => Ok(a),
                    Err(e) => Err(self.fail(
                        RemoteFailure::Unavailable,
                        &format!(
                            "{what}: {e} (after {} attempt{})",
                            attempt + 1,
                            if attempt == 0 { "" } else { "s" }
                        ),
                    )),
                };
            }
            attempt += 1;
            tracing::warn!("{what}: attempt {attempt} failed, retrying");
            std::thread::sleep(Duration::from_millis((200u64 << attempt.min(5)).min(5000)));
        }
    }

    /// Turns an unexpected answer into the error that says what it means.
    fn refusal(&self, a: &Answer, what: &str) -> Error {
        let text = String::from_utf8_lossy(&a.body);
        let code = xml_values(&text, "Code")
            .into_iter()
            .next()
            .unwrap_or_default();
        let message = xml_values(&text, "Message")
            .into_iter()
            .next()
            .unwrap_or_default();
        let failure = match (a.status, code.as_str()) {
            (_, "NoSuchBucket") => RemoteFailure::NoBucket,
            (
                _,
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken"
                | "TokenRefreshRequired"
                | "AuthorizationHeaderMalformed",
            )
            | (401, _) => RemoteFailure::Auth,
            (403, _) => RemoteFailure::Denied,
            (404, _) => RemoteFailure::NotFound,
            (409 | 412, _) => RemoteFailure::Conflict,
            (
                400,
                "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch" | "InvalidRequest",
            ) if message.to_ascii_lowercase().contains("checksum") || code != "InvalidRequest" => {
                RemoteFailure::Corrupt
            }
            (s, _) if s >= 500 || s == 429 => RemoteFailure::Unavailable,
            _ => RemoteFailure::Io,
        };
        let detail = match (code.is_empty(), message.is_empty()) {
            (true, _) => format!("HTTP {}", a.status),
            (false, true) => format!("HTTP {} {code}", a.status),
            (false, false) => format!("HTTP {} {code}: {message}", a.status),
        };
        self.fail(failure, &format!("{what}: {detail}"))
    }

    /// Lists the objects directly under the prefix (the backups' data and records).
    pub fn list(&self) -> Result<Vec<Meta>> {
        self.list_in("")
    }

    /// Lists the objects directly under `sub` (`""`, or a folder such as `packs/`), named
    /// relative to the prefix (`packs/<sha256>.pack`).
    pub fn list_in(&self, sub: &str) -> Result<Vec<Meta>> {
        let base = self.location.key("");
        let prefix = self.location.key(sub);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![
                ("list-type".to_owned(), "2".to_owned()),
                ("prefix".to_owned(), prefix.clone()),
                ("delimiter".to_owned(), "/".to_owned()),
            ];
            if let Some(t) = &token {
                q.push(("continuation-token".to_owned(), t.clone()));
            }
            let a = self.send("GET", None, &q, &[], &[], "list the remote backups")?;
            if a.status != 200 {
                return Err(self.refusal(&a, "list the remote backups"));
            }
            let text = String::from_utf8_lossy(&a.body).into_owned();
            for item in xml_blocks(&text, "Contents") {
                let key = xml_values(item, "Key")
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let Some(name) = key.strip_prefix(&base).filter(|_| key.starts_with(&prefix))
                else {
                    continue;
                };
                out.push(Meta {
                    name: name.to_owned(),
                    size: xml_values(item, "Size")
                        .first()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    e_tag: xml_values(item, "ETag").into_iter().next(),
                });
            }
            let truncated =
                xml_values(&text, "IsTruncated").first().map(String::as_str) == Some("true");
            token = xml_values(&text, "NextContinuationToken")
                .into_iter()
                .next();
            if !truncated || token.is_none() {
                return Ok(out);
            }
        }
    }

    /// The object's size and ETag; `None` when there is no such object.
    pub fn head(&self, name: &str) -> Result<Option<Meta>> {
        let what = format!("look at `{}`", self.location.key(name));
        let a = self.send("HEAD", Some(name), &[], &[], &[], &what)?;
        match a.status {
            200 => Ok(Some(Meta {
                name: name.to_owned(),
                size: header(&a.headers, "content-length")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                e_tag: header(&a.headers, "etag"),
            })),
            404 => {
                // A HEAD has no body: ask the bucket whether it is the bucket that is missing.
                self.bucket_exists()?;
                Ok(None)
            }
            _ => Err(self.refusal(&a, &what)),
        }
    }

    /// Fails with `remote_bucket_missing` when the bucket does not exist.
    fn bucket_exists(&self) -> Result<()> {
        let q = [
            ("list-type".to_owned(), "2".to_owned()),
            ("max-keys".to_owned(), "1".to_owned()),
        ];
        let a = self.send("GET", None, &q, &[], &[], "look at the bucket")?;
        if a.status == 200 {
            Ok(())
        } else {
            Err(self.refusal(&a, "look at the bucket"))
        }
    }

    /// A small object's bytes; `None` when there is no such object.
    pub fn get_small(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let what = format!("read `{}`", self.location.key(name));
        let a = self.send("GET", Some(name), &[], &[], &[], &what)?;
        match a.status {
            200 => Ok(Some(a.body)),
            404 if xml_values(&String::from_utf8_lossy(&a.body), "Code")
                .first()
                .map(String::as_str)
                == Some("NoSuchBucket") =>
            {
                Err(self.refusal(&a, &what))
            }
            404 => Ok(None),
            _ => Err(self.refusal(&a, &what)),
        }
    }

    /// Writes a small object only when its key does not exist (`If-None-Match: *`).
    pub fn put_new(&self, name: &str, bytes: &[u8]) -> Result<Created> {
        let what = format!("write `{}`", self.location.key(name));
        let extra = [
            ("if-none-match".to_owned(), "*".to_owned()),
            (
                "x-amz-checksum-sha256".to_owned(),
                b64(&Sha256::digest(bytes)),
            ),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        let a = self.send("PUT", Some(name), &[], &extra, bytes, &what)?;
        match a.status {
            200 => Ok(Created::Made),
            409 | 412 => Ok(Created::AlreadyThere),
            _ => Err(self.refusal(&a, &what)),
        }
    }

    /// Deletes an object; an AccessDenied refusal (Object Lock) is [`Deleted::Retained`].
    pub fn delete(&self, name: &str) -> Result<Deleted> {
        let what = format!("delete `{}`", self.location.key(name));
        let a = self.send("DELETE", Some(name), &[], &[], &[], &what)?;
        match a.status {
            200 | 204 | 404 => Ok(Deleted::Deleted),
            403 => match self.refusal(&a, &what) {
                Error::Remote {
                    failure: RemoteFailure::Denied,
                    ..
                } => Ok(Deleted::Retained),
                e => Err(e),
            },
            _ => Err(self.refusal(&a, &what)),
        }
    }

    /// Aborts a multipart upload that a crashed run left (its parts are billed until then).
    pub fn abort_upload(&self, name: &str, upload_id: &str) -> Result<()> {
        let what = format!("abort the upload of `{}`", self.location.key(name));
        let q = [("uploadId".to_owned(), upload_id.to_owned())];
        let a = self.send("DELETE", Some(name), &q, &[], &[], &what)?;
        match a.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(self.refusal(&a, &what)),
        }
    }

    /// Uploads the file at `file` (`bytes` long) as `name`, hashing what it sends. A file of
    /// at most one part goes in one PUT; a larger one as a multipart upload whose id is handed
    /// to `started` before its first part (a crash then leaves a record the next run aborts),
    /// and `started(None)` once it is complete or aborted. With `only_new`, a single PUT carries
    /// `If-None-Match: *` (a content-addressed pack: a key taken holds the same bytes, which the
    /// caller checks by size; a multipart upload of one is harmless for the same reason).
    pub fn put_file(
        &self,
        name: &str,
        file: &Path,
        bytes: u64,
        only_new: bool,
        started: &mut dyn FnMut(Option<&str>) -> Result<()>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Uploaded> {
        let key = self.location.key(name);
        let f = files::open_read_nofollow(file).map_err(|e| Error::io("read backup", file, e))?;
        let read_at = |offset: u64, len: u64| -> Result<Vec<u8>> {
            let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
            f.read_exact_at(&mut buf, offset)
                .map_err(|e| Error::io("read backup", file, e))?;
            Ok(buf)
        };
        if bytes <= PART_BYTES {
            let data = read_at(0, bytes)?;
            let digest = Sha256::digest(&data);
            failpoint::hit("remote.part");
            let what = format!("upload `{key}`");
            let mut extra = vec![("x-amz-checksum-sha256".to_owned(), b64(&digest))];
            if only_new {
                extra.push(("if-none-match".to_owned(), "*".to_owned()));
            }
            let a =
                self.send_hashed("PUT", Some(name), &[], &extra, &data, Some(&digest), &what)?;
            let created = match a.status {
                200 => true,
                409 | 412 if only_new => false,
                _ => return Err(self.refusal(&a, &what)),
            };
            progress(bytes);
            return Ok(Uploaded {
                sha256: files::hex(&digest),
                parts: 1,
                created,
            });
        }
        let what = format!("start the upload of `{key}`");
        let q = [("uploads".to_owned(), String::new())];
        let extra = [("x-amz-checksum-algorithm".to_owned(), "SHA256".to_owned())];
        let a = self.send("POST", Some(name), &q, &extra, &[], &what)?;
        if a.status != 200 {
            return Err(self.refusal(&a, &what));
        }
        let upload_id = xml_values(&String::from_utf8_lossy(&a.body), "UploadId")
            .into_iter()
            .next()
            .ok_or_else(|| {
                self.fail(
                    RemoteFailure::Io,
                    &format!("{what}: no UploadId in the answer"),
                )
            })?;
        started(Some(&upload_id))?;
        let result = self.upload_parts(name, &key, &upload_id, bytes, &read_at, progress);
        match result {
            Ok(up) => {
                started(None)?;
                Ok(up)
            }
            Err(e) => {
                // Best effort: when the store is unreachable the record stays, and the next
                // run aborts it.
                if self.abort_upload(name, &upload_id).is_ok() {
                    let _ = started(None);
                }
                Err(e)
            }
        }
    }

    fn upload_parts(
        &self,
        name: &str,
        key: &str,
        upload_id: &str,
        bytes: u64,
        read_at: &(dyn Fn(u64, u64) -> Result<Vec<u8>> + Sync),
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Uploaded> {
        let parts = bytes.div_ceil(PART_BYTES);
        let mut whole = Sha256::new();
        // (part number, ETag, checksum), in order.
        let mut done: Vec<(u64, String, String)> = Vec::new();
        let mut next = 0u64;
        let mut first_batch = true;
        while next < parts {
            // Read a batch in order (the whole file's hash needs it), send it at once.
            let batch: Vec<(u64, Vec<u8>)> = (next..parts.min(next + self.concurrency as u64))
                .map(|i| {
                    let offset = i * PART_BYTES;
                    read_at(offset, PART_BYTES.min(bytes - offset)).map(|d| (i, d))
                })
                .collect::<Result<_>>()?;
            for (_, d) in &batch {
                whole.update(d);
            }
            next += batch.len() as u64;
            let results: Vec<Result<(u64, String, String)>> = std::thread::scope(|s| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|(i, data)| {
                        s.spawn(move || {
                            let number = i + 1;
                            let digest = Sha256::digest(data);
                            let checksum = b64(&digest);
                            let what = format!("upload part {number} of `{key}`");
                            let q = [
                                ("partNumber".to_owned(), number.to_string()),
                                ("uploadId".to_owned(), upload_id.to_owned()),
                            ];
                            let extra = [("x-amz-checksum-sha256".to_owned(), checksum.clone())];
                            let a = self.send_hashed(
                                "PUT",
                                Some(name),
                                &q,
                                &extra,
                                data,
                                Some(&digest),
                                &what,
                            )?;
                            if a.status != 200 {
                                return Err(self.refusal(&a, &what));
                            }
                            let etag = header(&a.headers, "etag").unwrap_or_default();
                            progress(data.len() as u64);
                            Ok((number, etag, checksum))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Internal("an upload thread panicked".into()))
                        })
                    })
                    .collect()
            });
            for r in results {
                done.push(r?);
            }
            if first_batch {
                // Parts are on the server, the upload is not complete: the moment a crash
                // leaves an incomplete multipart upload behind.
                failpoint::hit("remote.part");
                first_batch = false;
            }
        }
        let body: String = std::iter::once("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">".to_owned())
            .chain(done.iter().map(|(n, etag, sum)| {
                format!(
                    "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag><ChecksumSHA256>{sum}</ChecksumSHA256></Part>",
                    xml_escape(etag)
                )
            }))
            .chain(std::iter::once("</CompleteMultipartUpload>".to_owned()))
            .collect();
        let what = format!("complete the upload of `{key}`");
        let q = [("uploadId".to_owned(), upload_id.to_owned())];
        let a = self.send("POST", Some(name), &q, &[], body.as_bytes(), &what)?;
        // S3 may answer 200 with an error in the body.
        if a.status != 200 || String::from_utf8_lossy(&a.body).contains("<Error>") {
            return Err(self.refusal(&a, &what));
        }
        Ok(Uploaded {
            sha256: files::hex(&whole.finalize()),
            parts,
            created: true,
        })
    }

    /// Streams an object into `out`, hashing it; `progress` is told each chunk's size. Returns
    /// (bytes, SHA-256).
    pub fn download(
        &self,
        name: &str,
        out: &mut dyn Write,
        progress: &dyn Fn(u64),
    ) -> Result<(u64, String)> {
        let key = self.location.key(name);
        let what = format!("download `{key}`");
        let Some(creds) = &self.credentials else {
            return Err(self.fail(
                RemoteFailure::Auth,
                "no credentials: set `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` in the environment",
            ));
        };
        let path = self.path(Some(name));
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), self.host.clone()),
            ("x-amz-date".into(), amz_date.clone()),
            ("x-amz-content-sha256".into(), EMPTY_SHA256.to_owned()),
        ];
        if let Some(t) = &creds.token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        let auth = sigv4::authorization(
            &sigv4::Request {
                method: "GET",
                path: &path,
                query: &[],
                headers: &headers,
                payload_sha256: EMPTY_SHA256,
            },
            &creds.access_key,
            &creds.secret_key,
            &self.region,
            &amz_date,
        );
        let mut rb = http::Request::builder()
            .method("GET")
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            rb = rb.header(k.as_str(), v.as_str());
        }
        let req = rb
            .header("authorization", auth)
            .body(())
            .map_err(|e| Error::Internal(format!("cannot build a request: {e}")))?;
        let mut r = self
            .agent
            .run(req)
            .map_err(|e| self.fail(RemoteFailure::Unavailable, &format!("{what}: {e}")))?;
        if r.status().as_u16() != 200 {
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let body = r.body_mut().read_to_vec().unwrap_or_default();
            return Err(self.refusal(
                &Answer {
                    status,
                    headers,
                    body,
                },
                &what,
            ));
        }
        let mut reader = r.body_mut().with_config().limit(u64::MAX).reader();
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| self.fail(RemoteFailure::Unavailable, &format!("{what}: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| Error::io("write the downloaded copy", Path::new(&key), e))?;
            total += n as u64;
            progress(n as u64);
        }
        Ok((total, files::hex(&hasher.finalize())))
    }
}

fn header(h: &http::HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The text of every `<tag>…</tag>` in `xml`, unescaped.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    xml_blocks(xml, tag).into_iter().map(xml_unescape).collect()
}

/// The inner text of every `<tag>…</tag>` in `xml`, as it is.
fn xml_blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Standard base64 with padding, for the checksum headers (no crate needed for 32 bytes).
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn xml_values_are_found_and_unescaped() {
        let x = "<R><Contents><Key>a&amp;b</Key><ETag>&quot;x&quot;</ETag></Contents><Contents><Key>c</Key></Contents></R>";
        let items = xml_blocks(x, "Contents");
        assert_eq!(items.len(), 2);
        assert_eq!(xml_values(items[0], "Key"), ["a&b"]);
        assert_eq!(xml_values(items[0], "ETag"), ["\"x\""]);
        assert_eq!(xml_values(x, "Missing"), Vec::<String>::new());
    }
}
