//! Where `fanout transform` reads its CSV from: a local file (served to the
//! workers in byte ranges), a stream read once in order (standard input, a
//! pipe, a gzip file, a file in another encoding: sent as the request body),
//! or a URL the coordinator reads itself.

use anyhow::{bail, Context, Result};
use encoding_rs::{Decoder, Encoding};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// The first bytes of every gzip stream (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A CSV input, opened.
pub enum Input {
    /// A regular file of UTF-8 text: its workers read it in byte ranges.
    File { path: PathBuf, size: u64 },
    /// Bytes read once, in order, as UTF-8 text.
    Stream { name: String, reader: Box<dyn Read + Send>, size: Option<u64> },
    /// An `http(s)://` or `s3://` URL, which the coordinator reads itself.
    Url(String),
}

/// Whether `given` names a file the coordinator reads itself.
pub fn is_url(given: &str) -> bool {
    ["http://", "https://", "s3://"].iter().any(|p| given.starts_with(p))
}

impl Input {
    /// Opens `given` (`-` for standard input), decoding it from `encoding` when that is not UTF-8.
    pub fn open(given: &str, encoding: Option<&'static Encoding>) -> Result<Input> {
        let decode = encoding.filter(|&e| e != encoding_rs::UTF_8);
        if is_url(given) {
            if decode.is_some() {
                bail!("--encoding applies to local files and standard input; the coordinator reads {given} as UTF-8");
            }
            return Ok(Input::Url(given.to_owned()));
        }
        let stream = |name: String, reader: Box<dyn Read + Send>, size| {
            let reader = match decode {
                Some(encoding) => Box::new(Decoded::new(reader, encoding)) as Box<dyn Read + Send>,
                None => reader,
            };
            Input::Stream { name, reader, size }
        };
        if given == "-" {
            return Ok(stream("standard input".into(), Box::new(io::stdin()), None));
        }
        let path = Path::new(given);
        let meta = std::fs::metadata(path).with_context(|| format!("cannot open {given}"))?;
        if meta.is_dir() {
            bail!("{given} is a directory, not a CSV file");
        }
        let kind = meta.file_type();
        if kind.is_fifo() || kind.is_char_device() || kind.is_socket() {
            // Opening a pipe waits for its writer, as `cat` does: say so.
            eprintln!("fanout: reading {given} (a pipe) until its writer closes it");
            let file = File::open(path).with_context(|| format!("cannot open {given}"))?;
            return Ok(stream(given.to_owned(), Box::new(file), None));
        }
        let mut file = File::open(path).with_context(|| format!("cannot open {given}"))?;
        let mut magic = [0; 2];
        let gzip = given.ends_with(".gz") || (file.read(&mut magic)? == 2 && magic == GZIP_MAGIC);
        let file = File::open(path).with_context(|| format!("cannot open {given}"))?;
        if gzip {
            return Ok(stream(given.to_owned(), Box::new(flate2::read::MultiGzDecoder::new(file)), None));
        }
        if decode.is_some() {
            return Ok(stream(given.to_owned(), Box::new(file), Some(meta.len())));
        }
        Ok(Input::File { path: path.to_owned(), size: meta.len() })
    }
}

/// The encoding `label` names (a WHATWG label: `latin1`, `windows-1252`, `shift_jis`, `utf-16le`...).
pub fn encoding(label: &str) -> Result<&'static Encoding> {
    Encoding::for_label(label.trim().as_bytes())
        .with_context(|| format!("--encoding {label:?} is not an encoding label (try latin1, windows-1252, utf-16le)"))
}

/// A reader decoding another encoding into UTF-8 as it reads (a byte-order
/// mark, when there is one, decides instead).
struct Decoded<R> {
    inner: R,
    decoder: Decoder,
    raw: Vec<u8>,
    out: Vec<u8>,
    at: usize,
    done: bool,
}

impl<R: Read> Decoded<R> {
    fn new(inner: R, encoding: &'static Encoding) -> Decoded<R> {
        Decoded { inner, decoder: encoding.new_decoder(), raw: vec![0; 64 * 1024], out: Vec::new(), at: 0, done: false }
    }
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.out.len() && !self.done {
            let n = self.inner.read(&mut self.raw)?;
            self.done = n == 0;
            let room = self.decoder.max_utf8_buffer_length(n).unwrap_or(n * 4 + 16);
            self.out.resize(room, 0);
            // With room for the worst case, every byte read is decoded at once.
            let (_, _, written, _) = self.decoder.decode_to_utf8(&self.raw[..n], &mut self.out, self.done);
            self.out.truncate(written);
            self.at = 0;
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: impl Read) -> String {
        let mut s = String::new();
        std::io::BufReader::with_capacity(3, r).read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn other_encodings_are_read_as_utf8() {
        let latin1 = b"id,name\n1,Caf\xe9 cr\xe8me\n";
        assert_eq!(read_all(Decoded::new(&latin1[..], encoding("latin1").unwrap())), "id,name\n1,Café crème\n");
        let utf16: Vec<u8> = "a,b\n€,ü\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(read_all(Decoded::new(&utf16[..], encoding("utf-16le").unwrap())), "a,b\n€,ü\n");
        assert!(encoding("klingon").unwrap_err().to_string().contains("not an encoding label"));
    }
}
