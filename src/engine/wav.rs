//! Joining WAV files: the parts of a podcast, one per message, into one file.
//!
//! Speech endpoints answer each request with a whole RIFF/WAVE file. Parts of the same
//! format (channels, rate, sample size) join by concatenating their `data` chunks under one
//! new header; a short silence between them lets the listener hear the speaker change.

/// The audio format of a part: what must match for parts to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Format {
    /// The 16 bytes of the `fmt ` chunk's body for PCM.
    channels: u16,
    sample_rate: u32,
    bits_per_sample: u16,
    audio_format: u16,
}

impl Format {
    fn block_align(&self) -> u16 {
        self.channels * self.bits_per_sample.div_ceil(8)
    }
}

/// One part, read: its format and its samples.
fn read(wav: &[u8]) -> Result<(Format, &[u8]), String> {
    if wav.len() < 12 || &wav[0..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut format = None;
    let mut at = 12;
    while at + 8 <= wav.len() {
        let id = &wav[at..at + 4];
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let body = at + 8;
        // Streamed WAVs may give the data chunk an unknown (huge) size: take what is there.
        let end = body.saturating_add(size).min(wav.len());
        match id {
            b"fmt " if end - body >= 16 => {
                let field16 = |o: usize| u16::from_le_bytes([wav[body + o], wav[body + o + 1]]);
                format = Some(Format {
                    audio_format: field16(0),
                    channels: field16(2),
                    sample_rate: u32::from_le_bytes(
                        wav[body + 4..body + 8].try_into().expect("4 bytes"),
                    ),
                    bits_per_sample: field16(14),
                });
            }
            b"data" => {
                let format = format.ok_or("the data comes before its format")?;
                return Ok((format, &wav[body..end]));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        at = end + (size & 1);
    }
    Err("no data chunk".into())
}

/// The parts as one WAV file, with `gap_ms` of silence between them.
pub(super) fn join(parts: &[Vec<u8>], gap_ms: u32) -> Result<Vec<u8>, String> {
    let mut format = None;
    let mut samples = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let (this, data) = read(part).map_err(|e| format!("part {}: {e}", i + 1))?;
        match format {
            None => format = Some(this),
            Some(first) if first != this => {
                return Err(format!("part {} is in another audio format", i + 1));
            }
            Some(first) => {
                let frames = first.sample_rate as usize * gap_ms as usize / 1000;
                samples.resize(samples.len() + frames * first.block_align() as usize, 0);
            }
        }
        samples.extend_from_slice(data);
    }
    let format = format.ok_or("nothing to join")?;
    let mut wav = Vec::with_capacity(44 + samples.len());
    let data_len = u32::try_from(samples.len()).map_err(|_| "the audio is too long")?;
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&format.audio_format.to_le_bytes());
    wav.extend_from_slice(&format.channels.to_le_bytes());
    wav.extend_from_slice(&format.sample_rate.to_le_bytes());
    let byte_rate = format.sample_rate * u32::from(format.block_align());
    wav.extend_from_slice(&byte_rate.to_le_bytes());
    wav.extend_from_slice(&format.block_align().to_le_bytes());
    wav.extend_from_slice(&format.bits_per_sample.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.extend_from_slice(&samples);
    Ok(wav)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mono 16-bit file at `rate` Hz with these samples.
    fn wav(rate: u32, samples: &[i16]) -> Vec<u8> {
        let pcm: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut file = b"RIFF".to_vec();
        file.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
        file.extend_from_slice(b"WAVEfmt ");
        file.extend_from_slice(&16u32.to_le_bytes());
        file.extend_from_slice(&1u16.to_le_bytes());
        file.extend_from_slice(&1u16.to_le_bytes());
        file.extend_from_slice(&rate.to_le_bytes());
        file.extend_from_slice(&(rate * 2).to_le_bytes());
        file.extend_from_slice(&2u16.to_le_bytes());
        file.extend_from_slice(&16u16.to_le_bytes());
        // A chunk the reader must step over.
        file.extend_from_slice(b"LIST");
        file.extend_from_slice(&3u32.to_le_bytes());
        file.extend_from_slice(&[1, 2, 3, 0]);
        file.extend_from_slice(b"data");
        file.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
        file.extend_from_slice(&pcm);
        file
    }

    #[test]
    fn parts_join_with_silence_between_under_one_header() {
        let joined = join(&[wav(1000, &[1, 2, 3]), wav(1000, &[4, 5])], 2).unwrap();
        let (format, data) = read(&joined).unwrap();
        assert_eq!(
            (format.sample_rate, format.channels, format.bits_per_sample),
            (1000, 1, 16)
        );
        let samples: Vec<i16> = data
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(samples, [1, 2, 3, 0, 0, 4, 5]);
        assert_eq!(
            u32::from_le_bytes(joined[4..8].try_into().unwrap()) as usize,
            joined.len() - 8
        );
    }

    #[test]
    fn parts_of_different_formats_or_not_wav_do_not_join() {
        assert!(join(&[wav(1000, &[1]), wav(2000, &[1])], 0).is_err());
        assert!(join(&[b"ID3 an mp3".to_vec()], 0).is_err());
        assert!(join(&[], 0).is_err(), "nothing joins to nothing");
    }
}
