//! GPT-2's byte-level alphabet: every byte is written as a printable character, so a
//! byte-level BPE vocabulary spells raw bytes (`Ġ` is the space, `Ċ` the newline).

/// The bytes GPT-2 does not keep as themselves, in order; byte `EXCLUDED[n]` is written
/// as the character U+0100 + n.
const EXCLUDED: [u8; 68] = {
    let mut out = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        if !keeps_itself(b as u8) {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
};

const fn keeps_itself(b: u8) -> bool {
    matches!(b, 33..=126 | 161..=172 | 174..=255)
}

/// The byte a byte-level character stands for, or `None` for a character outside the
/// alphabet.
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 256 && keeps_itself(cp as u8) {
        return Some(cp as u8);
    }
    cp.checked_sub(256)
        .and_then(|n| EXCLUDED.get(n as usize).copied())
}

/// The character a byte is written as.
pub fn byte_to_char(b: u8) -> char {
    if keeps_itself(b) {
        return char::from(b);
    }
    let n = EXCLUDED.iter().position(|&x| x == b).unwrap_or(0) as u32;
    char::from_u32(256 + n).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The bytes a vocabulary entry stands for: decoded through the alphabet when every
/// character is in it, else the entry's own UTF-8 (as `tokenizers`' ByteLevel decoder).
pub fn token_bytes(token: &str, out: &mut Vec<u8>) {
    let start = out.len();
    for c in token.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.truncate(start);
                out.extend_from_slice(token.as_bytes());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_round_trips_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b), "byte {b}");
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(char_to_byte('€'), None);
    }
}
