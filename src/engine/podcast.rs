//! The podcast of a collaboration that asked for one (`podcast: true`): its transcript read
//! aloud after it has ended, one voice per member, as one WAV file in the data directory,
//! served at `/api/v1/collaborations/{id}/audio`.
//!
//! Each message is one request to the provider's `/audio/speech` (the provider the judge
//! and summarizer use), in WAV so the parts can be joined without decoding. If anything
//! fails, there is no `audio_url`, and the advisory message says why: a missing podcast
//! must never cost the collaboration its outcome.

use std::path::PathBuf;

use uuid::Uuid;

use super::{Crew, wav};
use crate::{
    agents::{Line, ModelRef},
    store::Lease,
};

/// Silence between two speakers, in milliseconds.
const GAP_MS: u32 = 300;
/// The most text one speech request takes (OpenAI's limit); a longer message is cut.
const MAX_INPUT_CHARS: usize = 4096;

/// Renders and records the podcast: its URL, or a note of why there is none.
pub(super) async fn record(
    crew: &Crew,
    lease: &Lease,
    roster: &[crate::domain::Sender],
    transcript: &[Line],
    provider: Option<&ModelRef>,
) {
    let id = lease.collaboration_id;
    let (url, note) = match render(crew, id, roster, transcript, provider).await {
        Ok(()) => (Some(format!("/api/v1/collaborations/{id}/audio")), None),
        Err(why) => {
            tracing::warn!(collaboration = %id, why, "no podcast");
            (None, Some(format!("No podcast was made: {why}.")))
        }
    };
    if let Err(error) = crew
        .journal
        .record_audio(lease, url.as_deref(), note.as_deref())
        .await
    {
        tracing::error!(collaboration = %id, error = format!("{error:#}"), "recording the podcast failed");
    }
}

/// Where a collaboration's podcast is kept.
pub fn file(dir: &std::path::Path, id: Uuid) -> PathBuf {
    dir.join(format!("{id}.wav"))
}

async fn render(
    crew: &Crew,
    id: Uuid,
    roster: &[crate::domain::Sender],
    transcript: &[Line],
    provider: Option<&ModelRef>,
) -> Result<(), String> {
    let provider = provider.ok_or("no model provider is configured to speak it")?;
    if transcript.is_empty() {
        return Err("nothing was said".into());
    }
    let settings = &crew.settings.podcast;
    let mut parts = Vec::with_capacity(transcript.len());
    for line in transcript {
        let place = roster
            .iter()
            .position(|member| member.id == line.sender.id)
            .unwrap_or(0);
        let voice = &settings.voices[place % settings.voices.len()];
        let text: String = line.content.chars().take(MAX_INPUT_CHARS).collect();
        let audio = crew
            .models
            .speech(&provider.provider, &settings.model, voice, &text)
            .await
            .map_err(|e| format!("the speech model failed: {e}"))?;
        parts.push(audio.to_vec());
    }
    let joined =
        wav::join(&parts, GAP_MS).map_err(|e| format!("the audio could not be joined: {e}"))?;
    tokio::fs::create_dir_all(&settings.dir)
        .await
        .map_err(|e| format!("the audio directory could not be made: {e}"))?;
    // Written whole under another name first, so a reader never gets half a file.
    let path = file(&settings.dir, id);
    let partial = path.with_extension("wav.partial");
    tokio::fs::write(&partial, joined)
        .await
        .map_err(|e| format!("the audio could not be written: {e}"))?;
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(|e| format!("the audio could not be written: {e}"))
}
