//! Generated data for benchmarks and large tests, the same on every run.

/// `rows` sales rows (`id,amount,date,category,region,product`) like the ones
/// the `vat` preset is for: untidy category names, a few amounts <= 0.
pub fn sales(rows: usize) -> Vec<u8> {
    let categories = [" Tools", "HOME ", "garden", "Kitchen", " toys "];
    let regions = ["north", "south", "east", "west"];
    let products = ["widget", "gadget", "gizmo", "doohickey"];
    let mut rng = crate::rng::Rng::new(0x9e37_79b9_7f4a_7c15u64);
    let mut next = move || rng.next_u64();
    let mut csv = b"id,amount,date,category,region,product\n".to_vec();
    for id in 1..=rows {
        let r = next();
        let cents = (r % 2_000_000) as i64 - 100_000;
        let sign = if cents < 0 { "-" } else { "" };
        let line = format!(
            "{id},{sign}{}.{:02},2026-{:02}-{:02},{},{},{}\n",
            cents.abs() / 100,
            cents.abs() % 100,
            r % 12 + 1,
            (r >> 8) % 28 + 1,
            categories[(r >> 16) as usize % categories.len()],
            regions[(r >> 24) as usize % regions.len()],
            products[(r >> 32) as usize % products.len()],
        );
        csv.extend_from_slice(line.as_bytes());
    }
    csv
}
