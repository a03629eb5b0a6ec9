//! The SIPp corpus sweep: every caller/callee pair of the team's scenario
//! corpus (`../shared/corpus/sipp`, see its `README.md` and `index.tsv`)
//! played through the SBC, judged against one table in the repository
//! (`tests/corpus-sipp.tsv`).
//!
//! Owns: reading and checking that table ([`Table`]: every scenario of the
//! corpus's index is in a row, every row names scenarios the index has,
//! every row but a `pass` says why, every `pending` names the issue 12 item
//! it waits for), a private copy of the corpus laid out the way SIPp 3.6.1
//! finds its pcaps, with the few documented [`ADAPTATIONS`]
//! ([`CorpusCopy`]; never written into the shared corpus), and the verdict
//! of one played pair ([`Outcome`], [`why_failed`]).
//!
//! May not: write into the shared corpus, or run a peer unbounded (the
//! sweep's runner in `tests/tests/interop.rs` bounds every SIPp run).
//!
//! The table's columns, tab-separated; `#` starts a comment line:
//!
//! | column | what |
//! | --- | --- |
//! | `caller` | a UAC scenario (path in the corpus), or `-` when the SBC itself sends (OPTIONS pings) |
//! | `caller_args` | extra SIPp arguments for the caller (`-` for none); corpus paths in them are resolved in the copy |
//! | `callee` | a UAS scenario on the trunk behind the SBC, or `-` when none listens (the SBC answers, or the trunk's port is closed) |
//! | `callee_args` | extra SIPp arguments for the callee |
//! | `status` | `pass` (must pass); `refused CODE` (the caller must get this final from the SBC, though its scenario wants a 200); `pending N` (fails until issue 12 item N is fixed: run, reported apart); `skip` (not run) |
//! | `note` | why: required for every status but `pass` |

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::sipp::{SIPP_PCAP_DIR, SippResult};

/// The table of the sweep, relative to this crate.
pub const TABLE: &str = "corpus-sipp.tsv";

/// Where the corpus is: `SBC_SIPP_CORPUS`, else `../shared/corpus/sipp`
/// beside the workspace.
pub fn corpus_dir() -> PathBuf {
    std::env::var_os("SBC_SIPP_CORPUS").map_or_else(
        || crate::workspace().join("../shared/corpus/sipp"),
        PathBuf::from,
    )
}

/// What a row expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Must pass.
    Pass,
    /// The caller's scenario expects a 200, but the SBC must answer (or
    /// relay) this final status instead; the row passes when the caller got
    /// it, the daemon survived and nothing crossed the border. The callee's
    /// own verdict is not judged.
    Refused(u16),
    /// Fails until the issue 12 item of this number is fixed; run and
    /// reported apart.
    Pending(u8),
    /// Not run.
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Pass => write!(f, "pass"),
            Status::Refused(code) => write!(f, "refused {code}"),
            Status::Pending(item) => write!(f, "pending {item}"),
            Status::Skip => write!(f, "skip"),
        }
    }
}

/// One caller/callee pair of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line number in the table (1-based), for messages.
    pub line: usize,
    /// The UAC scenario (corpus path); `None` when the SBC sends.
    pub caller: Option<String>,
    /// Extra SIPp arguments of the caller.
    pub caller_args: Vec<String>,
    /// The UAS scenario (corpus path); `None` when no callee listens.
    pub callee: Option<String>,
    /// Extra SIPp arguments of the callee.
    pub callee_args: Vec<String>,
    /// What the row expects.
    pub status: Status,
    /// Why (required for every status but `pass`).
    pub note: String,
}

impl Row {
    /// `caller -> callee`, for reports.
    pub fn name(&self) -> String {
        format!(
            "{} -> {}",
            self.caller.as_deref().unwrap_or("(SBC)"),
            self.callee.as_deref().unwrap_or("(none)")
        )
    }

    /// A short name usable in directory names.
    pub fn slug(&self) -> String {
        let stem = |s: &Option<String>| {
            s.as_deref().map_or_else(
                || "none".to_owned(),
                |p| {
                    p.rsplit('/')
                        .next()
                        .unwrap_or(p)
                        .trim_end_matches(".xml")
                        .to_owned()
                },
            )
        };
        let mut slug = format!("{}-{}", stem(&self.caller), stem(&self.callee));
        slug.retain(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        slug.truncate(40);
        slug
    }
}

/// The parsed table.
#[derive(Debug, Clone)]
pub struct Table {
    /// The rows, in file order.
    pub rows: Vec<Row>,
}

fn args_of(column: &str) -> Vec<String> {
    if column.trim() == "-" {
        Vec::new()
    } else {
        column.split_whitespace().map(str::to_owned).collect()
    }
}

fn scenario_of(column: &str) -> Option<String> {
    let c = column.trim();
    (c != "-").then(|| c.to_owned())
}

fn status_of(column: &str, n: usize) -> Result<Status, String> {
    Ok(match column.split_whitespace().collect::<Vec<_>>()[..] {
        ["pass"] => Status::Pass,
        ["skip"] => Status::Skip,
        ["refused", code] => match code.parse::<u16>() {
            Ok(code @ 300..=699) => Status::Refused(code),
            _ => {
                return Err(format!(
                    "line {n}: `refused {code}`: a final status, 300-699"
                ));
            }
        },
        ["pending", item] => match item.parse::<u8>() {
            Ok(item @ 1..=7) => Status::Pending(item),
            _ => return Err(format!("line {n}: `pending {item}`: items are 1 to 7")),
        },
        _ => {
            return Err(format!(
                "line {n}: status `{column}`: want pass, skip, `refused CODE` or `pending N`"
            ));
        }
    })
}

impl Table {
    /// The table shipped with this crate.
    pub fn shipped() -> Table {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE);
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Table::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Parses the table; the error names the line and what is wrong.
    pub fn parse(text: &str) -> Result<Table, String> {
        let mut rows: Vec<Row> = Vec::new();
        let mut header_seen = false;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            if !header_seen {
                if cols.first() != Some(&"caller") {
                    return Err(format!("line {n}: expected the header line first"));
                }
                header_seen = true;
                continue;
            }
            if cols.len() != 6 {
                return Err(format!(
                    "line {n}: {} tab-separated columns, want 6 (caller, caller_args, callee, \
                     callee_args, status, note)",
                    cols.len()
                ));
            }
            let status = status_of(cols[4], n)?;
            let note = cols[5].trim().to_owned();
            if status != Status::Pass && note.is_empty() {
                return Err(format!("line {n}: a `{status}` row needs its reason"));
            }
            let row = Row {
                line: n,
                caller: scenario_of(cols[0]),
                caller_args: args_of(cols[1]),
                callee: scenario_of(cols[2]),
                callee_args: args_of(cols[3]),
                status,
                note,
            };
            if row.caller.is_none() && row.callee.is_none() {
                return Err(format!("line {n}: a row needs a caller or a callee"));
            }
            if let Some(first) = rows
                .iter()
                .find(|r| r.caller == row.caller && r.callee == row.callee)
            {
                return Err(format!(
                    "line {n}: {} is already on line {}",
                    row.name(),
                    first.line
                ));
            }
            rows.push(row);
        }
        if !header_seen {
            return Err("no header line".to_owned());
        }
        Ok(Table { rows })
    }

    /// Every problem between the table and the corpus's index: a scenario
    /// the index lists (role uac or uas) that no row names in that role,
    /// and a row naming a scenario the index does not have in that role.
    /// Empty when they agree.
    pub fn check_against_index(&self, index_tsv: &str) -> Vec<String> {
        let mut uac = BTreeSet::new();
        let mut uas = BTreeSet::new();
        for line in index_tsv.lines().skip(1) {
            let mut cols = line.split('\t');
            let (Some(file), Some(role)) = (cols.next(), cols.next()) else {
                continue;
            };
            match role {
                "uac" if file.ends_with(".xml") => uac.insert(file.to_owned()),
                "uas" if file.ends_with(".xml") => uas.insert(file.to_owned()),
                _ => false,
            };
        }
        let mut problems = Vec::new();
        for row in &self.rows {
            if let Some(c) = &row.caller
                && !uac.contains(c)
            {
                problems.push(format!(
                    "line {}: caller {c} is not a uac scenario of the corpus index",
                    row.line
                ));
            }
            if let Some(c) = &row.callee
                && !uas.contains(c)
            {
                problems.push(format!(
                    "line {}: callee {c} is not a uas scenario of the corpus index",
                    row.line
                ));
            }
        }
        for file in &uac {
            if !self.rows.iter().any(|r| r.caller.as_ref() == Some(file)) {
                problems.push(format!("{file} (uac) is in no row of the table"));
            }
        }
        for file in &uas {
            if !self.rows.iter().any(|r| r.callee.as_ref() == Some(file)) {
                problems.push(format!("{file} (uas) is in no row of the table"));
            }
        }
        problems
    }
}

/// The changes the copy makes to corpus scenarios so they run as their
/// authors meant on this machine: `(path prefix, from, to, why)`. Besides
/// these, only [`escape_regexp_attributes`] is applied.
pub const ADAPTATIONS: &[(&str, &str, &str, &str)] = &[
    // saghul's 90 s pauses are the length of its own g711a.pcap; the
    // corpus stands Debian's 4.7 s one in for it. Callers wait 6 s and
    // callees 2 s, so a caller's BYE (pbertera's callers pause 3 s) never
    // lands in a callee's pause.
    (
        "saghul/sipp_uac_",
        "<pause milliseconds=\"90000\"/>",
        "<pause milliseconds=\"6000\"/>",
        "saghul's pcap lasts 90 s, Debian's stand-in 4.7 s",
    ),
    (
        "saghul/sipp_uas_",
        "<pause milliseconds=\"90000\"/>",
        "<pause milliseconds=\"2000\"/>",
        "saghul's pcap lasts 90 s, Debian's stand-in 4.7 s",
    ),
];

/// `text` with `<` and `>` inside every `regexp="..."` attribute written as
/// `&lt;` and `&gt;`: SIPp 3.6.1's XML parser refuses the literal ones
/// (the corpus README's "Invalid XML in scenario"); the regexp SIPp reads
/// is the same.
pub fn escape_regexp_attributes(text: &str) -> String {
    const ATTR: &str = "regexp=\"";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(ATTR) {
        let value_start = at + ATTR.len();
        out.push_str(&rest[..value_start]);
        let after = &rest[value_start..];
        let end = after.find('"').unwrap_or(after.len());
        out.push_str(&after[..end].replace('<', "&lt;").replace('>', "&gt;"));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A private copy of the corpus's scenarios and CSVs with the pcap links
/// its README describes and the [`ADAPTATIONS`], removed on drop.
#[derive(Debug)]
pub struct CorpusCopy {
    root: PathBuf,
}

impl CorpusCopy {
    /// Copies every `.xml`, `.csv` and `.tsv` of `corpus` (its folder
    /// layout kept, `pcap` folders left out) into `dir/corpus`, links
    /// Debian's pcaps where the scenarios look for them (`pcap/` in
    /// `sipp-builtin`, `drachtio` and `pbertera`, whose scenarios say
    /// `../pcap/`; `g711a.pcap` beside saghul's), and applies the
    /// adaptations.
    pub fn new(corpus: &Path, dir: &Path) -> CorpusCopy {
        let root = dir.join("corpus");
        let _ = fs::remove_dir_all(&root);
        copy_tree(corpus, &root);
        let pcap = Path::new(SIPP_PCAP_DIR);
        for folder in ["sipp-builtin", "drachtio", "pbertera"] {
            if root.join(folder).is_dir() {
                let _ = std::os::unix::fs::symlink(pcap, root.join(folder).join("pcap"));
            }
        }
        if root.join("saghul").is_dir() {
            let _ = std::os::unix::fs::symlink(
                pcap.join("g711a.pcap"),
                root.join("saghul").join("g711a.pcap"),
            );
        }
        adapt_tree(&root, &root);
        CorpusCopy { root }
    }

    /// The copy of a corpus path.
    pub fn path(&self, corpus_path: &str) -> PathBuf {
        self.root.join(corpus_path)
    }

    /// `args` with every argument that names a file of the copy made
    /// absolute (SIPp runs in a directory of its own).
    pub fn resolve_args(&self, args: &[String]) -> Vec<String> {
        args.iter()
            .map(|a| {
                let p = self.root.join(a);
                if a.contains('/') && p.is_file() {
                    p.to_string_lossy().into_owned()
                } else {
                    a.clone()
                }
            })
            .collect()
    }
}

impl Drop for CorpusCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let entries = fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        // Links in the corpus are not followed: the copy makes its own.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            // pcap folders are the copy's own links, whatever the corpus
            // holds there.
            if entry.file_name() != "pcap" {
                copy_tree(&path, &target);
            }
        } else if kind.is_file()
            && path
                .extension()
                .is_some_and(|e| e == "xml" || e == "csv" || e == "tsv")
        {
            fs::copy(&path, &target)
                .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", path.display(), target.display()));
        }
    }
}

fn adapt_tree(root: &Path, dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            adapt_tree(root, &path);
            continue;
        }
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let mut adapted = escape_regexp_attributes(&text);
        for (prefix, from, to, _) in ADAPTATIONS {
            if rel.starts_with(prefix) {
                adapted = adapted.replace(from, to);
            }
        }
        if adapted != text {
            fs::write(&path, adapted).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
    }
}

/// How one played pair ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// As the row expects, and nothing crossed the border.
    Passed,
    /// Not so; the text says which peer and how (SIPp's own words).
    Failed(String),
}

impl Outcome {
    /// Whether the pair passed.
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }
}

/// A one-line account of a SIPp run that did not succeed: how it ended,
/// its counts and SIPp's own complaint (the first line of its error log or
/// stderr that says what went wrong, else the last line of its stderr).
pub fn why_failed(role: &str, result: &SippResult) -> String {
    let ending = if result.killed_at_deadline {
        "killed at the deadline".to_owned()
    } else {
        format!("exit {}", result.status.code().unwrap_or(-1))
    };
    let complaint = result
        .errors
        .lines()
        .chain(result.stderr.lines())
        .map(str::trim)
        .find(|l| {
            let l = l.to_ascii_lowercase();
            [
                "aborting call",
                "unexpected",
                "error",
                "timeout",
                "timed out",
                "failed",
                "unable",
                "referenced",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .or_else(|| result.stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("(no complaint logged)");
    let mut complaint = complaint.to_owned();
    // Timestamps and Call-IDs make every run's line different; what
    // follows them is what a reader needs.
    if let Some(at) = complaint.find(": while expecting") {
        complaint = complaint[at + 2..].to_owned();
    }
    if let Some(end) = complaint.char_indices().nth(220).map(|(i, _)| i) {
        complaint.truncate(end);
    }
    format!(
        "{role}: {ending}, {} ok / {} failed: {complaint}",
        result.successful(),
        result.failed()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "file\trole\tdescription\n\
                         a/uac.xml\tuac\tx\n\
                         a/uas.xml\tuas\tx\n\
                         a/data.csv\tdata\tx\n\
                         b/uac.xml\tuac\tx\n";

    const HEAD: &str = "caller\tcaller_args\tcallee\tcallee_args\tstatus\tnote\n";

    #[test]
    fn rows_parse_with_args_and_statuses() {
        let t = Table::parse(&format!(
            "# comment\n{HEAD}\
             a/uac.xml\t-inf a/data.csv\ta/uas.xml\t-\tpass\t\n\
             b/uac.xml\t-\t-\t-\tpending 5\tclosed port gives 503 at once\n\
             -\t-\ta/uas.xml\t-rtp_echo\tskip\tneeds OPTIONS pings\n\
             a/uac.xml\t-\t-\t-\trefused 488\tno c= line\n"
        ))
        .expect("parses");
        assert_eq!(t.rows.len(), 4);
        assert_eq!(t.rows[0].caller_args, ["-inf", "a/data.csv"]);
        assert_eq!(t.rows[0].line, 3);
        assert_eq!(t.rows[1].status, Status::Pending(5));
        assert_eq!(t.rows[1].callee, None);
        assert_eq!(t.rows[2].caller, None);
        assert_eq!(t.rows[2].name(), "(SBC) -> a/uas.xml");
        assert_eq!(t.rows[3].status, Status::Refused(488));
        assert_eq!(t.rows[0].slug(), "uac-uas");
        assert!(t.check_against_index(INDEX).is_empty());
    }

    #[test]
    fn bad_tables_say_where() {
        for (body, want) in [
            (
                "a/uac.xml\t-\ta/uas.xml\t-\tskip\t\n",
                "line 2: a `skip` row needs",
            ),
            (
                "a/uac.xml\t-\ta/uas.xml\t-\tpending 9\tx\n",
                "items are 1 to 7",
            ),
            ("a/uac.xml\t-\ta/uas.xml\t-\tmaybe\tx\n", "status `maybe`"),
            (
                "a/uac.xml\t-\ta/uas.xml\t-\trefused 200\tx\n",
                "a final status",
            ),
            ("a/uac.xml\ta/uas.xml\tpass\n", "3 tab-separated columns"),
            (
                "a/uac.xml\t-\ta/uas.xml\t-\tpass\t\na/uac.xml\t-\ta/uas.xml\t-\tpass\t\n",
                "is already on line 2",
            ),
        ] {
            let err = Table::parse(&format!("{HEAD}{body}")).expect_err(body);
            assert!(err.contains(want), "{err} (want {want})");
        }
    }

    #[test]
    fn every_corpus_scenario_must_be_in_a_row() {
        let t = Table::parse(&format!(
            "{HEAD}a/uac.xml\t-\ta/uas.xml\t-\tpass\t\n\
             a/uas.xml\t-\tc/uas.xml\t-\tpass\t\n"
        ))
        .expect("parses");
        assert_eq!(
            t.check_against_index(INDEX),
            [
                "line 3: caller a/uas.xml is not a uac scenario of the corpus index",
                "line 3: callee c/uas.xml is not a uas scenario of the corpus index",
                "b/uac.xml (uac) is in no row of the table",
            ]
        );
    }

    #[test]
    fn regexp_attributes_are_escaped_and_nothing_else() {
        let xml = "<ereg regexp=\"<sip:(.*)>\" search_in=\"hdr\"/>\n<send><![CDATA[a<b>]]></send>";
        assert_eq!(
            escape_regexp_attributes(xml),
            "<ereg regexp=\"&lt;sip:(.*)&gt;\" search_in=\"hdr\"/>\n<send><![CDATA[a<b>]]></send>"
        );
        assert_eq!(escape_regexp_attributes("no attribute"), "no attribute");
    }
}
