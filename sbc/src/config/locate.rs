//! Where things are in a configuration file: byte spans to line and column,
//! and dotted field paths (`trunk[1].realm`) to the span of their value.
//!
//! The typed schema carries no spans (its users should not care where a value
//! came from). Instead the text is parsed a second time by `toml_edit` (the
//! parser under `toml`), whose document keeps the span of every key and
//! value, and validation names what it rejects by path; this module finds the
//! path in that tree. A path that does not exist (a defaulted field) resolves
//! to its nearest written ancestor. (`toml::Spanned` inside a schema-less
//! serde tree would do the same, but toml 0.8 cannot span implicit tables
//! such as `media` in `[media.xdp]` and fails there.)

use std::fmt;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A key of a table.
    Key(String),
    /// An index into an array.
    Index(usize),
}

/// A field path such as `trunk[1].realm`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(pub(crate) Vec<Seg>);

impl FieldPath {
    /// The path of an element of a top-level array (`trunk[1]`).
    pub(crate) fn item(array: &str, index: usize) -> Self {
        FieldPath(vec![Seg::Key(array.to_owned()), Seg::Index(index)])
    }

    /// The path of a top-level section or key.
    pub(crate) fn root(key: &str) -> Self {
        FieldPath(vec![Seg::Key(key.to_owned())])
    }

    /// This path extended by a key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        FieldPath(segs)
    }

    /// This path extended by an index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        FieldPath(segs)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A configuration text with the spans of its values.
pub(crate) struct Located<'a> {
    text: &'a str,
    /// `None` when the text is not even TOML.
    root: Option<Node>,
}

struct Node {
    /// Where the value is written; `None` for an implicit table (`media` in
    /// `[media.xdp]`).
    span: Option<Range<usize>>,
    /// The span together with the keys and values under it: what
    /// [`Located::path_at`] searches.
    extent: Range<usize>,
    kind: Kind,
}

enum Kind {
    Table(Vec<(String, Node)>),
    Array(Vec<Node>),
    /// A scalar; strings keep their value so messages can name an element.
    Leaf(Option<String>),
}

impl<'a> Located<'a> {
    /// Indexes `text`; a text that is not TOML gets no tree (every path then
    /// resolves to the start of the file).
    pub(crate) fn new(text: &'a str) -> Self {
        let root = ImDocument::parse(text).ok().map(|doc| {
            let mut root = table_node(doc.as_table());
            root.span = Some(0..text.len());
            root.extent = 0..text.len();
            root
        });
        Located { text, root }
    }

    /// The 1-based line and column where the value at `path` (or its nearest
    /// written ancestor) starts.
    pub(crate) fn position_of(&self, path: &FieldPath) -> (usize, usize) {
        self.nearest(path).map_or((1, 1), |node| {
            self.line_col(node.span.as_ref().unwrap_or(&node.extent).start)
        })
    }

    /// The string written at `path`, if that is a string.
    pub(crate) fn string_at(&self, path: &FieldPath) -> Option<&str> {
        match &self.exact(path)?.kind {
            Kind::Leaf(Some(text)) => Some(text),
            _ => None,
        }
    }

    fn exact(&self, path: &FieldPath) -> Option<&Node> {
        let mut node = self.root.as_ref()?;
        for seg in &path.0 {
            node = Self::child(node, seg)?;
        }
        Some(node)
    }

    fn child<'n>(node: &'n Node, seg: &Seg) -> Option<&'n Node> {
        match (&node.kind, seg) {
            (Kind::Table(entries), Seg::Key(key)) => {
                entries.iter().find(|(k, _)| k == key).map(|(_, n)| n)
            }
            (Kind::Array(items), Seg::Index(index)) => items.get(*index),
            _ => None,
        }
    }

    fn nearest(&self, path: &FieldPath) -> Option<&Node> {
        let mut node = self.root.as_ref()?;
        for seg in &path.0 {
            match Self::child(node, seg) {
                Some(next) => node = next,
                None => break,
            }
        }
        Some(node)
    }

    /// The path of the innermost value whose span holds `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> FieldPath {
        let mut path = FieldPath::default();
        let Some(mut node) = self.root.as_ref() else {
            return path;
        };
        loop {
            let inner = match &node.kind {
                Kind::Table(entries) => entries
                    .iter()
                    .find(|(_, n)| n.extent.contains(&offset))
                    .map(|(k, n)| (Seg::Key(k.clone()), n)),
                Kind::Array(items) => items
                    .iter()
                    .enumerate()
                    .find(|(_, n)| n.extent.contains(&offset))
                    .map(|(i, n)| (Seg::Index(i), n)),
                Kind::Leaf(_) => None,
            };
            match inner {
                Some((seg, next)) => {
                    path.0.push(seg);
                    node = next;
                }
                None => return path,
            }
        }
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }
}

/// A node whose extent covers its own span and everything under it.
fn node(span: Option<Range<usize>>, kind: Kind) -> Node {
    let mut extent = span.clone();
    let children: Vec<&Node> = match &kind {
        Kind::Table(entries) => entries.iter().map(|(_, n)| n).collect(),
        Kind::Array(items) => items.iter().collect(),
        Kind::Leaf(_) => Vec::new(),
    };
    for child in children {
        extent = Some(match extent {
            Some(e) => e.start.min(child.extent.start)..e.end.max(child.extent.end),
            None => child.extent.clone(),
        });
    }
    Node {
        span,
        extent: extent.unwrap_or(0..0),
        kind,
    }
}

/// Widens a node's extent to its key, so an error at a key finds the entry.
fn with_key(mut node: Node, key: Option<Range<usize>>) -> Node {
    if let Some(key) = key {
        node.extent = key.start.min(node.extent.start)..key.end.max(node.extent.end);
    }
    node
}

fn table_node(table: &Table) -> Node {
    let entries = table
        .iter()
        .map(|(key, item)| {
            let key_span = table.key(key).and_then(|k| k.span());
            (key.to_owned(), with_key(item_node(item), key_span))
        })
        .collect();
    node(table.span(), Kind::Table(entries))
}

fn item_node(item: &Item) -> Node {
    match item {
        Item::Value(value) => value_node(value),
        Item::Table(table) => table_node(table),
        Item::ArrayOfTables(array) => node(
            array.span(),
            Kind::Array(array.iter().map(table_node).collect()),
        ),
        Item::None => node(None, Kind::Leaf(None)),
    }
}

fn value_node(value: &Value) -> Node {
    let kind = match value {
        Value::String(s) => Kind::Leaf(Some(s.value().clone())),
        Value::Array(array) => Kind::Array(array.iter().map(value_node).collect()),
        Value::InlineTable(table) => Kind::Table(
            table
                .iter()
                .map(|(key, v)| {
                    let key_span = table.key(key).and_then(|k| k.span());
                    (key.to_owned(), with_key(value_node(v), key_span))
                })
                .collect(),
        ),
        _ => Kind::Leaf(None),
    };
    node(value.span(), kind)
}
