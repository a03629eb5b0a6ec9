//! baresip (Debian's `baresip` 1.0) as a softphone in a lab's network:
//! it plays a WAV file as its microphone, answers calls at once, and
//! records what it hears, so a test can tell two-way audio from silence.
//!
//! Owns: the tone WAV a phone plays ([`write_tone_wav`]), a phone's own
//! configuration directory for `baresip -f` ([`Softphone::new`]: `config`
//! and `accounts`; modules aufile as the source, sndfile to record both
//! directions, aubridge as a player that plays nowhere), running it in the
//! lab's network, bounded by its own `-t` and killed on drop, and reading
//! back what it heard ([`Softphone::heard`], [`tone_power`]).
//!
//! May not: use the machine's sound devices or a configuration outside
//! its directory, or outlive the test.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::lab::Net;
use crate::netns::Background;

/// The sample rate of every phone (G.711's own: no resampling).
pub const RATE: u32 = 8000;

/// Writes `secs` seconds of a sine tone of `hz` at `RATE`, 16-bit mono
/// PCM, to `path`.
pub fn write_tone_wav(path: &Path, hz: f64, secs: u32) {
    let samples = RATE * secs;
    let data_len = samples * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let t = f64::from(i) / f64::from(RATE);
        // A quarter of full scale: loud, far from clipping in G.711.
        let v = (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    fs::write(path, out).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The 16-bit samples of a PCM WAV file's `data` chunk (the first
/// channel's when there are more); `None` when it is not one.
pub fn wav_samples(bytes: &[u8]) -> Option<Vec<i16>> {
    if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut channels = 1usize;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?) as usize;
        let body = bytes.get(at + 8..(at + 8 + len).min(bytes.len()))?;
        if id == b"fmt " {
            channels = usize::from(u16::from_le_bytes(body.get(2..4)?.try_into().ok()?)).max(1);
            if u16::from_le_bytes(body.get(14..16)?.try_into().ok()?) != 16 {
                return None;
            }
        } else if id == b"data" {
            return Some(
                body.chunks_exact(2 * channels)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            );
        }
        at += 8 + len + (len & 1);
    }
    None
}

/// The power of `hz` in `samples` relative to their whole power (0 to
/// about 1; Goertzel over the samples at `RATE`): near 0.5 or more for a
/// clean tone of that frequency, near 0 for silence or another tone.
pub fn tone_power(samples: &[i16], hz: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let k = 2.0 * (2.0 * std::f64::consts::PI * hz / f64::from(RATE)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0f64;
    for &x in samples {
        let x = f64::from(x);
        energy += x * x;
        let s = x + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    if energy == 0.0 {
        return 0.0;
    }
    let power = s1 * s1 + s2 * s2 - k * s1 * s2;
    // A pure tone of N samples gives power = N/2 * energy.
    power / (energy * samples.len() as f64 / 2.0)
}

/// One baresip softphone: its directory (configuration, the tone it
/// plays, its log and what it recorded) and, once started, the process.
#[derive(Debug)]
pub struct Softphone {
    dir: PathBuf,
    listen: SocketAddr,
    process: Option<Background>,
}

impl Softphone {
    /// A phone of user `user` on `listen` (SIP; media on the same
    /// address), playing a tone of `hz`, answering calls at once; its files
    /// go to `dir`, made here.
    pub fn new(dir: &Path, listen: SocketAddr, user: &str, hz: f64) -> Softphone {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let tone = dir.join("tone.wav");
        write_tone_wav(&tone, hz, 20);
        fs::write(
            dir.join("config"),
            format!(
                "# Written by tests::baresip.\n\
                 poll_method epoll\nsip_listen {listen}\nnet_interface {ip}\n\
                 module_path /usr/lib/baresip/modules\n\
                 module stdio.so\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\n\
                 module sndfile.so\n\
                 module_app account.so\nmodule_app menu.so\n\
                 audio_source aufile,{tone}\n\
                 audio_player aubridge,nowhere-{port}\n\
                 ausrc_srate {RATE}\nauplay_srate {RATE}\nausrc_channels 1\nauplay_channels 1\n\
                 snd_path {dir}\n",
                ip = listen.ip(),
                port = listen.port(),
                tone = tone.display(),
                dir = dir.display(),
            ),
        )
        .unwrap_or_else(|e| panic!("write {}/config: {e}", dir.display()));
        fs::write(
            dir.join("accounts"),
            format!("<sip:{user}@{listen}>;regint=0;answermode=auto\n"),
        )
        .unwrap_or_else(|e| panic!("write {}/accounts: {e}", dir.display()));
        Softphone {
            dir: dir.to_path_buf(),
            listen,
            process: None,
        }
    }

    /// Makes the phone register `aor` (e.g. `sip:100@192.0.2.1`, whose host
    /// is where the REGISTER goes) every `regint` seconds instead of
    /// staying unregistered, still answering calls at once; it removes its
    /// registration when it quits.
    pub fn register(&self, aor: &str, regint: u32) {
        fs::write(
            self.dir.join("accounts"),
            format!("<{aor}>;regint={regint};answermode=auto\n"),
        )
        .unwrap_or_else(|e| panic!("write {}/accounts: {e}", self.dir.display()));
    }

    /// Starts the phone in `net` for `secs` seconds (`-t`), with extra
    /// commands (`-e "/dial sip:..."`).
    pub fn start(&mut self, net: &Net, secs: u32, commands: &[&str]) {
        let log = fs::File::create(self.dir.join("baresip.log"))
            .unwrap_or_else(|e| panic!("create {}/baresip.log: {e}", self.dir.display()));
        let mut cmd = net.command("baresip");
        cmd.arg("-f").arg(&self.dir).args(["-t", &secs.to_string()]);
        for c in commands {
            cmd.args(["-e", c]);
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(Stdio::null());
        self.process = Some(Background::spawn(&mut cmd));
    }

    /// Waits for the phone to quit by itself (`-t`), at most `limit`, then
    /// kills it.
    pub fn wait(&mut self, limit: Duration) {
        if let Some(p) = self.process.take() {
            let _ = p.wait(limit);
        }
    }

    /// Its log (stdout) so far.
    pub fn log(&self) -> String {
        fs::read(self.dir.join("baresip.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// What it heard: the samples sndfile recorded on its receive side
    /// (`dump-*-dec.wav`), empty when it recorded none.
    pub fn heard(&self) -> Vec<i16> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("dump-") && n.ends_with("-dec.wav"))
            })
            .filter_map(|p| wav_samples(&fs::read(p).ok()?))
            .flatten()
            .collect()
    }

    /// The address RTP came from, as baresip logs it (`incoming rtp for
    /// 'audio' established, receiving from IP:PORT`).
    pub fn rtp_from(&self) -> Option<String> {
        self.log()
            .lines()
            .find_map(|l| l.split("receiving from ").nth(1))
            .map(|s| s.trim().to_owned())
    }

    /// Where it listens.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_is_told_from_another_and_from_silence() {
        let dir = std::env::temp_dir().join(format!("sbc-tone-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.wav");
        write_tone_wav(&path, 440.0, 1);
        let samples = wav_samples(&fs::read(&path).expect("read")).expect("a wav");
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(samples.len(), RATE as usize);
        assert!(
            tone_power(&samples, 440.0) > 0.9,
            "{}",
            tone_power(&samples, 440.0)
        );
        assert!(tone_power(&samples, 880.0) < 0.01);
        assert_eq!(tone_power(&vec![0; 800], 440.0), 0.0);
        assert_eq!(wav_samples(b"not a wav"), None);
    }
}
