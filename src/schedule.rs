//! Which fetch runs next, within a total and a per-host concurrency limit.
//!
//! Items keep their input order within each host; across hosts, the earliest
//! waiting item whose host has room goes first, so one slow or crowded host
//! never holds up the others.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// The host a URL's pages are counted under (as a parsed URL names it:
/// lower case, IDNA); `None` for what does not parse, which is never fetched.
pub fn host_of(url: &str) -> Option<String> {
    Some(url::Url::parse(url.trim()).ok()?.host_str()?.to_owned())
}

/// A queue of items (by input index) grouped by host.
#[derive(Debug)]
pub struct HostQueue {
    total: usize,
    per_host: usize,
    running: usize,
    hosts: HashMap<String, Host>,
    /// `(first waiting index, host)` for every host with room and waiting items.
    ready: BTreeSet<(usize, String)>,
}

#[derive(Debug, Default)]
struct Host {
    waiting: VecDeque<usize>,
    running: usize,
}

impl HostQueue {
    /// A queue of `items` (index, host) run at most `total` at once and `per_host` per host.
    pub fn new(items: impl IntoIterator<Item = (usize, String)>, total: usize, per_host: usize) -> HostQueue {
        let mut hosts: HashMap<String, Host> = HashMap::new();
        for (index, host) in items {
            hosts.entry(host).or_default().waiting.push_back(index);
        }
        let ready = hosts.iter().filter_map(|(h, q)| Some((*q.waiting.front()?, h.clone()))).collect();
        HostQueue { total: total.max(1), per_host: per_host.max(1), running: 0, hosts, ready }
    }

    /// The next item to start, if the limits allow one; it counts as running until [`HostQueue::finish`].
    pub fn start_next(&mut self) -> Option<(usize, String)> {
        if self.running >= self.total {
            return None;
        }
        let (index, host_name) = self.ready.pop_first()?;
        let host = self.hosts.get_mut(&host_name).expect("ready hosts are known");
        host.waiting.pop_front();
        host.running += 1;
        self.running += 1;
        if host.running < self.per_host {
            if let Some(&next) = host.waiting.front() {
                self.ready.insert((next, host_name.clone()));
            }
        }
        Some((index, host_name))
    }

    /// Marks one running item of `host` as done.
    pub fn finish(&mut self, host_name: &str) {
        let host = self.hosts.get_mut(host_name).expect("finished items were started");
        let had_room = host.running < self.per_host;
        host.running -= 1;
        self.running -= 1;
        if !had_room {
            if let Some(&next) = host.waiting.front() {
                self.ready.insert((next, host_name.to_owned()));
            }
        }
    }

    /// Takes every item not yet started, in input order (when a deadline passes, say).
    pub fn drain_waiting(&mut self) -> Vec<usize> {
        self.ready.clear();
        let mut all: Vec<usize> = self.hosts.values_mut().flat_map(|h| h.waiting.drain(..)).collect();
        all.sort_unstable();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(hosts: &str, total: usize, per_host: usize) -> HostQueue {
        HostQueue::new(hosts.chars().enumerate().map(|(i, h)| (i, h.to_string())), total, per_host)
    }

    fn start_all(q: &mut HostQueue) -> Vec<usize> {
        std::iter::from_fn(|| q.start_next().map(|(i, _)| i)).collect()
    }

    #[test]
    fn limits_hold_and_order_is_kept() {
        let mut q = queue("aaaabab", 3, 2);
        assert_eq!(start_all(&mut q), vec![0, 1, 4]);
        q.finish("a");
        assert_eq!(start_all(&mut q), vec![2]);
        q.finish("b");
        assert_eq!(start_all(&mut q), vec![6]);
        q.finish("a");
        q.finish("a");
        assert_eq!(start_all(&mut q), vec![3, 5]);
        q.finish("b");
        q.finish("a");
        q.finish("a");
        assert_eq!(start_all(&mut q), Vec::<usize>::new());
    }

    #[test]
    fn a_crowded_host_does_not_block_others() {
        let mut q = queue("aaaaaaaab", 4, 2);
        assert_eq!(start_all(&mut q), vec![0, 1, 8]);
    }

    #[test]
    fn every_item_starts_exactly_once() {
        let hosts = "abcabcaaaabbbcdddddda";
        let mut q = queue(hosts, 5, 2);
        let mut started = Vec::new();
        let mut running: Vec<(usize, String)> = Vec::new();
        loop {
            while let Some(item) = q.start_next() {
                let per_host = running.iter().filter(|(_, h)| *h == item.1).count();
                assert!(per_host < 2 && running.len() < 5);
                started.push(item.0);
                running.push(item);
            }
            if running.is_empty() {
                break;
            }
            let (_, host) = running.remove(started.len() % running.len());
            q.finish(&host);
        }
        started.sort_unstable();
        assert_eq!(started, (0..hosts.len()).collect::<Vec<_>>());
    }

    #[test]
    fn draining_returns_what_never_started() {
        let mut q = queue("aabba", 2, 1);
        assert_eq!(start_all(&mut q), vec![0, 2]);
        assert_eq!(q.drain_waiting(), vec![1, 3, 4]);
        assert_eq!(start_all(&mut q), Vec::<usize>::new());
    }
}
