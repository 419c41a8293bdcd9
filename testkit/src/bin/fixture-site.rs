//! Serves the fixture site (see `fanout_testkit::site`) until killed, with
//! every file of a directory under `/files/<name>`. Prints the base URL.
//!
//! Usage: `fixture-site [DIR]`

use fanout_testkit::site::Site;

fn main() {
    let site = Site::start();
    if let Some(dir) = std::env::args_os().nth(1) {
        for entry in std::fs::read_dir(&dir).expect("read the directory").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let content_type = match name.rsplit('.').next() {
                Some("csv") => "text/csv",
                Some("html") => "text/html; charset=utf-8",
                Some("json") => "application/json",
                _ => "application/octet-stream",
            };
            site.put(&name, content_type, std::fs::read(entry.path()).expect("read a file"));
        }
    }
    println!("{}", site.url(""));
    loop {
        std::thread::park();
    }
}
