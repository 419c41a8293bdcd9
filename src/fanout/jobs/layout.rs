//! Where a job's objects are in the bucket.
//!
//! Everything of job `ID` is under `jobs/ID/`; unit numbers are written with
//! six digits so that a listing shows units in order (the manifest, not the
//! listing, is what gives the order). `active/ID` marks a job that is not
//! finished, so that a tick of every job lists only those.

use super::JobId;

/// Which of a unit's objects: the records, the error records, or the receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Records (or results, or a partial aggregate), one per line.
    Part,
    /// Error records, one per line.
    Errors,
    /// The unit's receipt.
    Receipt,
}

/// Who wrote a unit's objects: they live under different keys, so that a
/// worker that is still writing and a tick that gave up on it never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// The worker that ran the unit.
    Worker,
    /// A second run of the unit, to compare with the first ([`super::plan::Limits::audit_percent`]).
    Audit,
    /// A tick that concluded the unit without a worker's answer (it failed, or was not attempted).
    Tick,
}

/// The keys of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
    id: JobId,
}

impl Layout {
    /// The keys of job `id`.
    pub fn new(id: &JobId) -> Layout {
        Layout { prefix: format!("jobs/{id}/"), id: id.clone() }
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// `jobs/ID/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What the job is: written once when it is made.
    pub fn plan(&self) -> String {
        format!("{}plan.json", self.prefix)
    }

    /// The receipts folded together.
    pub fn state(&self) -> String {
        format!("{}state.json", self.prefix)
    }

    /// Why the job stopped early (a cancel, a failure), when it did.
    pub fn stop(&self) -> String {
        format!("{}stop.json", self.prefix)
    }

    /// Written once, last.
    pub fn manifest(&self) -> String {
        format!("{}manifest.json", self.prefix)
    }

    /// An aggregate job's merged groups.
    pub fn result(&self) -> String {
        format!("{}result.json", self.prefix)
    }

    /// The URL list a scrape job was given inline, one JSON string per line.
    pub fn urls(&self) -> String {
        format!("{}input/urls.ndjson", self.prefix)
    }

    /// Who runs unit `unit`.
    pub fn lease(&self, unit: u64) -> String {
        format!("{}leases/{unit:06}.json", self.prefix)
    }

    /// Where `writer` puts `slot` of unit `unit`.
    pub fn object(&self, unit: u64, slot: Slot, writer: Writer) -> String {
        let p = &self.prefix;
        match (writer, slot) {
            (Writer::Worker, Slot::Part) => format!("{p}parts/{unit:06}.ndjson"),
            (Writer::Worker, Slot::Errors) => format!("{p}errors/{unit:06}.ndjson"),
            // The one object that decides the unit: a worker's or a tick's, whichever comes first.
            (Writer::Worker | Writer::Tick, Slot::Receipt) => format!("{p}receipts/{unit:06}.json"),
            (Writer::Audit, Slot::Part) => format!("{p}audit/{unit:06}.ndjson"),
            (Writer::Audit, Slot::Errors) => format!("{p}audit/{unit:06}.errors.ndjson"),
            (Writer::Audit, Slot::Receipt) => format!("{p}audit/{unit:06}.json"),
            (Writer::Tick, Slot::Part) => format!("{p}parts/{unit:06}.failed.ndjson"),
            (Writer::Tick, Slot::Errors) => format!("{p}errors/{unit:06}.failed.ndjson"),
        }
    }

    /// The marker of an unfinished job.
    pub fn active(&self) -> String {
        format!("{ACTIVE}{}", self.id)
    }
}

/// Where the markers of unfinished jobs are.
pub const ACTIVE: &str = "active/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_never_share_a_key_but_for_the_receipt() {
        let l = Layout::new(&JobId::new(0, 7));
        assert_eq!(l.plan(), "jobs/00000000000000000000000000000007/plan.json");
        assert_eq!(l.active(), "active/00000000000000000000000000000007");
        let mut keys = Vec::new();
        for writer in [Writer::Worker, Writer::Audit, Writer::Tick] {
            for slot in [Slot::Part, Slot::Errors] {
                keys.push(l.object(12, slot, writer));
            }
        }
        keys.push(l.object(12, Slot::Receipt, Writer::Worker));
        keys.push(l.object(12, Slot::Receipt, Writer::Audit));
        keys.push(l.lease(12));
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "{keys:?}");
        assert_eq!(l.object(12, Slot::Receipt, Writer::Tick), l.object(12, Slot::Receipt, Writer::Worker));
        assert!(l.object(3, Slot::Part, Writer::Worker).ends_with("parts/000003.ndjson"));
    }
}
