//! Seeded random corruptions of a valid body, for the tests that hold a hand-written reader to
//! the decoder it stands in for.

/// `count` corruptions of `valid`: each overwrites, flips a bit of, inserts or removes one to
/// three bytes at random places, from a fixed xorshift sequence so that a failure reproduces.
/// New bytes come from `alphabet`, or are any byte when it is empty.
fn corruptions(valid: &[u8], count: usize, alphabet: &[u8]) -> Vec<Vec<u8>> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below as u64) as usize
    };
    let new_byte = |random: &mut dyn FnMut(usize) -> usize| match alphabet {
        [] => random(256) as u8,
        _ => alphabet[random(alphabet.len())],
    };
    (0..count)
        .map(|_| {
            let mut body = valid.to_vec();
            for _ in 0..1 + random(3) {
                let at = random(body.len());
                match random(4) {
                    0 => body[at] = new_byte(&mut random),
                    1 => body[at] ^= 1 << random(8),
                    2 => body.insert(at, new_byte(&mut random)),
                    _ => drop(body.remove(at)),
                }
            }
            body
        })
        .collect()
}

/// Hands `decide` each of `count` corruptions of `valid` (see [`corruptions`]); `decide`
/// checks the reader against its model on the body and says whether the body was accepted.
/// Checks that the bodies were varied enough to mean something: over a thousand accepted and
/// over a thousand refused.
pub(crate) fn check_corruptions(
    valid: &[u8],
    count: usize,
    alphabet: &[u8],
    mut decide: impl FnMut(&[u8]) -> bool,
) {
    let (mut accepted, mut refused) = (0, 0);
    for body in corruptions(valid, count, alphabet) {
        if decide(&body) {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    assert!(
        accepted > 1_000 && refused > 1_000,
        "{accepted} accepted / {refused} refused"
    );
}
