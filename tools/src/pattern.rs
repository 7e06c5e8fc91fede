//! The deterministic block contents `ring-producer` writes (see
//! `shim-c/src/ring_producer.c`): block `i` of a stream is pattern block
//! `i mod K` with its first 8 bytes replaced by `i` in little-endian.

/// Bytes of distinct source data the producer copies from.
pub const SOURCE_BYTES: usize = 64 << 20;

/// The splitmix64 finaliser, as in the C program.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Number of distinct pattern blocks (K) for a block size.
pub fn source_blocks(block: usize) -> usize {
    (SOURCE_BYTES / block).max(1)
}

/// Pattern block `b` of `block` bytes.
pub fn pattern_block(b: u64, block: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(block + 8);
    let mut j = 0u64;
    while out.len() < block {
        out.extend_from_slice(&splitmix64((b << 32) | j).to_le_bytes());
        j += 1;
    }
    out.truncate(block);
    out
}

/// All K pattern blocks, concatenated.
pub fn source(block: usize) -> Vec<u8> {
    (0..source_blocks(block) as u64)
        .flat_map(|b| pattern_block(b, block))
        .collect()
}

/// Checks that `data` is block `i` of a stream with this block size.
pub fn check_block(source: &[u8], block: usize, i: u64, data: &[u8]) -> Result<(), String> {
    let k = source_blocks(block) as u64;
    let start = (i % k) as usize * block;
    let expected = &source[start..start + data.len().min(block)];
    if data.len() > block {
        return Err(format!(
            "block {i}: {} bytes, more than {block}",
            data.len()
        ));
    }
    if data.len() >= 8 {
        let idx = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        if idx != i {
            return Err(format!("block {i}: carries index {idx}"));
        }
        if data[8..] != expected[8..] {
            return Err(format!("block {i}: payload differs from the pattern"));
        }
    } else if data != expected {
        return Err(format!("block {i}: short block differs from the pattern"));
    }
    Ok(())
}
