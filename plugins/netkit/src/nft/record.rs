//! The journal of what each attachment put into podnet's tables.
//!
//! A [`Record`] lists an attachment's elements (and the idempotent set-up commands they
//! need). [`commit`] writes it under [`state_dir`] *before* adding the elements, so a
//! crash at any point leaves a record that [`release`] can undo; [`release`] finds it by
//! owner, container id and interface alone (a network renamed since ADD still cleans up),
//! re-adds then deletes its elements in one transaction (deleting an element that is not
//! there would fail the whole batch; an add first makes the delete always valid), and
//! removes the tables when the last record of the host goes. Neither reads the table, so
//! their cost does not depend on how many containers or ports exist.
//!
//! Layout: `<state_dir>/<owner>/<group>/<containerID>.<ifname>` (JSON). `group` is the
//! bridge for owners whose per-bridge elements live as long as the bridge has a
//! container (the firewall's isolation and admin-chain entries), [`NO_GROUP`] otherwise.
//! `/run` and the kernel's tables both start empty at boot, so the journal never
//! outlives what it describes.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::schema::Family;
use super::wire::{self, Op};
use super::{apply, attachment_key, lock, query, Batch, NftError, COND_CHAIN_PREFIX, TABLE};

/// Where the records live.
/// The journals' directory, `<run dir>/nft` ([`crate::run_dir`]).
pub fn state_dir() -> PathBuf {
    crate::run_dir().join("nft")
}

/// The group of records that have none (`:` can be in no interface name).
pub const NO_GROUP: &str = ":none";

/// One element of a podnet set or map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `inet` or `bridge`.
    pub family: String,
    pub set: String,
    /// In nft syntax (`10.88.0.5`, `tcp . 8080`, `"veth1" . 02:00:00:00:00:01`).
    pub key: String,
    /// A map element's value (`10.88.0.5 . 80`, `jump CNI-ADMIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Added with `create`: the transaction fails when another attachment holds the key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive: bool,
    /// How an error names it (`host port tcp/8080`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl Entry {
    pub fn inet(set: impl Into<String>, key: impl Into<String>) -> Entry {
        Entry {
            family: "inet".into(),
            set: set.into(),
            key: key.into(),
            value: None,
            exclusive: false,
            label: None,
        }
    }

    pub fn bridge(set: impl Into<String>, key: impl Into<String>) -> Entry {
        Entry {
            family: "bridge".into(),
            ..Entry::inet(set, key)
        }
    }

    pub fn with_value(mut self, value: impl Into<String>) -> Entry {
        self.value = Some(value.into());
        self
    }

    /// Held by one attachment at a time; `label` names it in the conflict error.
    pub fn exclusive(mut self, label: impl Into<String>) -> Entry {
        self.exclusive = true;
        self.label = Some(label.into());
        self
    }
}

/// What one owner (a plugin) put into the tables for one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The plugin: `bridge`, `ptp`, `portmap`, `firewall`.
    pub owner: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// The bridge whose lifetime `group_entries` follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Regular chains of `inet podnet` the entries jump to (an admin chain), made over
    /// netlink when missing and never deleted by a release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<String>,
    /// Idempotent `nft` commands the entries need (a network's conditioned maps and
    /// chain, which hold its `conditionsV4`/`conditionsV6`, nft syntax by nature).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<String>,
    pub entries: Vec<Entry>,
    /// Entries shared by every attachment of `group`: added by each, deleted by the last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_entries: Vec<Entry>,
}

/// What [`commit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// No other attachment of the record's group existed before this one.
    pub first_in_group: bool,
}

/// What [`release`] undid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub record: Record,
    /// It was the last attachment of its group.
    pub last_in_group: bool,
    /// It was the last record of the host: the tables went too (unless a user filled an
    /// admin chain).
    pub last: bool,
}

/// A key that another attachment holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is already held by container {holder_id} (network {holder_network}, interface {holder_ifname})")]
pub struct Conflict {
    /// The entry, for the message: `pm4any tcp . 8080`.
    pub what: String,
    pub holder_network: String,
    pub holder_id: String,
    pub holder_ifname: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Conflict(Conflict),
}

impl From<CommitError> for cni::CniError {
    fn from(e: CommitError) -> cni::CniError {
        match e {
            CommitError::Nft(n) => n.into(),
            CommitError::Conflict(c) => {
                cni::CniError::new(cni::ErrorCode::ADDRESS_IN_USE, c.to_string())
            }
        }
    }
}

fn journal_err(path: &Path) -> impl FnOnce(std::io::Error) -> NftError + '_ {
    move |source| NftError::Journal(path.to_owned(), source)
}

impl Record {
    pub fn new(owner: &str, network: &str, container_id: &str, ifname: &str) -> Record {
        Record {
            owner: owner.into(),
            network: network.into(),
            container_id: container_id.into(),
            ifname: ifname.into(),
            group: None,
            chains: Vec::new(),
            setup: Vec::new(),
            entries: Vec::new(),
            group_entries: Vec::new(),
        }
    }

    /// The comment of the record's own elements.
    pub fn comment(&self) -> String {
        attachment_key(&self.network, &self.container_id, &self.ifname)
    }

    /// The comment of its group's shared elements (`:` is in no network name, so a GC
    /// sweep by network never takes them).
    pub fn group_comment(&self) -> String {
        format!("bridge:{}", self.group.as_deref().unwrap_or_default())
    }

    fn group_dir(&self) -> PathBuf {
        state_dir()
            .join(&self.owner)
            .join(self.group.as_deref().unwrap_or(NO_GROUP))
    }

    pub fn path(&self) -> PathBuf {
        self.group_dir()
            .join(file_name(&self.container_id, &self.ifname))
    }

    fn families(&self) -> (bool, bool) {
        let all = || self.entries.iter().chain(&self.group_entries);
        (
            all().any(|e| e.family == "inet") || !self.setup.is_empty() || !self.chains.is_empty(),
            all().any(|e| e.family == "bridge"),
        )
    }

    /// The families of podnet's tables this record's elements live in.
    fn table_families(&self) -> Vec<Family> {
        let (inet, bridge) = self.families();
        let mut out = Vec::new();
        if inet {
            out.push(Family::Inet);
        }
        if bridge {
            out.push(Family::Bridge);
        }
        out
    }

    /// The record's own set-up (a conditioned network's maps and chain), by `nft`: it
    /// holds the network's `conditionsV4`/`conditionsV6`, which are nft syntax from the
    /// config, and no attachment's name.
    fn setup_batch(&self) -> Batch {
        Batch(self.setup.clone())
    }

    /// Every element with its comment, as [`wire`] applies them (`op` for the record's
    /// own, plain add for the group's shared ones).
    fn ops<'a>(
        &'a self,
        op: impl Fn(&Entry) -> Op,
        comments: &'a (String, String),
        with_group: bool,
    ) -> Vec<(Op, &'a Entry, Option<&'a str>)> {
        let group: &[Entry] = if with_group { &self.group_entries } else { &[] };
        self.entries
            .iter()
            .map(|e| (op(e), e, Some(comments.0.as_str())))
            .chain(
                group
                    .iter()
                    .map(|e| (Op::Add, e, Some(comments.1.as_str()))),
            )
            .collect()
    }
}

/// The tables of `rec` (from the schema, over netlink), then its own chains and set-up.
fn make_tables(rec: &Record) -> Result<(), NftError> {
    wire::create_tables(&rec.table_families())?;
    make_own(rec)
}

/// The record's own chains (over netlink) and set-up (`nft`, only when it has some).
fn make_own(rec: &Record) -> Result<(), NftError> {
    let chains: Vec<&str> = rec.chains.iter().map(String::as_str).collect();
    wire::create_chains(&chains)?;
    apply(&rec.setup_batch())
}

/// After a batch failed with ENOENT (a flushed ruleset, or a conditioned network's maps
/// not made yet): the record's chains and set-up, and the tables when that is not
/// enough.
fn make_missing(rec: &Record) -> Result<(), NftError> {
    let own = !rec.setup.is_empty() || !rec.chains.is_empty();
    if !own || make_own(rec).is_err() {
        make_tables(rec)?;
    }
    Ok(())
}

fn is_enoent(e: &wire::WireError) -> bool {
    e.errno() == Some(nix::libc::ENOENT)
}

/// Adds a record's elements over netlink ([`wire`]), all or nothing. When a table,
/// set or chain is missing (first use, after a reboot or a flushed ruleset), the
/// kernel says ENOENT: what is missing is made and the elements go again.
///
/// `expected` says what is there already: with [`Expected::Nothing`] (no other record:
/// the last DEL removed the tables, or none were ever made) the tables are made first;
/// with [`Expected::Tables`] (no other record of this owner) the record's own chains go
/// in the transaction of its elements. A transaction bound to fail is not tried (an
/// aborted nf_tables transaction waits for an RCU grace period, 10–25 ms here), and
/// neither is an `add chain` of a chain that is there (a chain update in a transaction
/// costs about as much).
fn add_elements(rec: &Record, exclusive: bool, expected: Expected) -> Result<(), NftError> {
    if expected == Expected::Nothing {
        make_tables(rec)?;
    }
    let comments = (rec.comment(), rec.group_comment());
    let ops = rec.ops(
        |e| {
            if exclusive && e.exclusive {
                Op::Create
            } else {
                Op::Add
            }
        },
        &comments,
        true,
    );
    // An element jumping to an admin chain not made yet would fail the transaction.
    let chains: Vec<&str> = match expected {
        Expected::Tables => rec.chains.iter().map(String::as_str).collect(),
        Expected::Nothing | Expected::Chains => Vec::new(),
    };
    match wire::apply_creating(&chains, &ops) {
        Err(e) if is_enoent(&e) => {
            make_missing(rec)?;
            Ok(wire::apply_creating(&chains, &ops)?)
        }
        other => Ok(other?),
    }
}

/// Deletes a record's elements (re-added first in the same transaction, so that the
/// delete is valid whatever is left), the group's only with `with_group`.
fn del_elements(rec: &Record, with_group: bool) -> Result<(), NftError> {
    match delete_over_wire(rec, with_group, &[]) {
        Err(e) if is_enoent(&e) => {
            make_missing(rec)?;
            Ok(delete_over_wire(rec, with_group, &[])?)
        }
        other => Ok(other?),
    }
}

/// [`del_elements`] for the last record of the host, which also removes both tables
/// (keeping `inet podnet` when a user put rules into an admin chain of it), in the same
/// transaction.
fn del_elements_and_tables(rec: &Record, with_group: bool) -> Result<(), NftError> {
    let drop: &[&str] = if wire::inet_has_rules_outside(super::own_chain)? {
        &["bridge"]
    } else {
        &["bridge", "inet"]
    };
    match delete_over_wire(rec, with_group, drop) {
        Err(e) if is_enoent(&e) => {
            make_missing(rec)?;
            Ok(delete_over_wire(rec, with_group, drop)?)
        }
        other => Ok(other?),
    }
}

fn delete_over_wire(rec: &Record, with_group: bool, drop: &[&str]) -> Result<(), wire::WireError> {
    let comments = (rec.comment(), rec.group_comment());
    let mut ops = rec.ops(|_| Op::Add, &comments, with_group);
    let deletes: Vec<_> = ops.iter().map(|(_, e, _)| (Op::Delete, *e, None)).collect();
    ops.extend(deletes);
    wire::apply_and_drop(&ops, drop)
}

fn file_name(container_id: &str, ifname: &str) -> String {
    format!("{container_id}.{ifname}")
}

/// A journal entry being written; renamed to [`file_name`] when whole.
fn temp_name(container_id: &str, ifname: &str) -> String {
    format!(".{}.tmp", file_name(container_id, ifname))
}

/// Removes every journal temporary file: called with the journal lock held, when no
/// writer can be in the middle of one, so each is what a dead ADD left.
pub(crate) fn remove_stale_temps() {
    for owner in read_dir(&state_dir()) {
        for group in read_dir(&owner) {
            for file in read_dir(&group) {
                if is_tmp(&file) {
                    let _ = fs::remove_file(&file);
                }
            }
            let _ = fs::remove_dir(&group);
        }
    }
}

fn write_record(rec: &Record) -> Result<(), NftError> {
    let path = rec.path();
    let dir = rec.group_dir();
    fs::create_dir_all(&dir).map_err(journal_err(&dir))?;
    let tmp = dir.join(temp_name(&rec.container_id, &rec.ifname));
    let body = serde_json::to_vec(rec).expect("a record always serializes");
    fs::write(&tmp, body).map_err(journal_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(journal_err(&path))
}

fn read_record(path: &Path) -> Result<Option<Record>, NftError> {
    match fs::read(path) {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NftError::Journal(path.to_owned(), e)),
    }
}

/// Journals `rec` and adds its elements in one transaction. An exclusive entry held by
/// another attachment fails with [`CommitError::Conflict`] naming the holder and leaves
/// nothing behind; one held by this same attachment (a retried ADD) is fine.
pub fn commit(rec: &Record) -> Result<Commit, CommitError> {
    let _lock = lock()?;
    let first_in_group = rec.group.is_some() && !has_other(&rec.group_dir(), &rec.path());
    let path = rec.path();
    let before = read_record(&path)?;
    write_record(rec)?;
    let undo_journal = || match &before {
        Some(old) => write_record(old),
        None => fs::remove_file(&path).map_err(|e| journal_err(&path)(e)),
    };
    let expected = if !any_record_but(&path) {
        Expected::Nothing
    } else if rec.chains.is_empty() || has_other_of(&rec.owner, &path) {
        Expected::Chains
    } else {
        Expected::Tables
    };
    let Err(first) = add_elements(rec, true, expected) else {
        super::watch::ensure();
        return Ok(Commit { first_in_group });
    };
    let retried = if rec.entries.iter().any(|e| e.exclusive) {
        match holder_conflict(rec) {
            Ok(Some(conflict)) => Err(CommitError::Conflict(conflict)),
            Ok(None) => {
                // The first try made the tables and their chains when it had to.
                let now = match expected {
                    Expected::Nothing => Expected::Chains,
                    other => other,
                };
                add_elements(rec, false, now).map_err(CommitError::from)
            }
            Err(e) => Err(e.into()),
        }
    } else {
        Err(first.into())
    };
    match retried {
        Ok(()) => super::watch::ensure(),
        Err(_) => {
            let _ = undo_journal();
        }
    }
    retried.map(|()| Commit { first_in_group })
}

/// The first exclusive entry of `rec` held by another attachment (read only after a
/// refused ADD: one listing per set involved).
fn holder_conflict(rec: &Record) -> Result<Option<Conflict>, NftError> {
    let mine = rec.comment();
    let mut sets: Vec<(&str, &str)> = Vec::new();
    for e in rec.entries.iter().filter(|e| e.exclusive) {
        if !sets.contains(&(e.family.as_str(), e.set.as_str())) {
            sets.push((&e.family, &e.set));
        }
    }
    for (family, set) in sets {
        let kind = if set.starts_with("pm") { "map" } else { "set" };
        let Some(json) = query(&["-j", "list", kind, family, TABLE, set])? else {
            continue;
        };
        let held = super::parse_elements(json.as_bytes())?;
        for e in rec.entries.iter().filter(|e| e.exclusive && e.set == set) {
            let Some(h) = held.iter().find(|h| h.key == e.key && h.comment != mine) else {
                continue;
            };
            let mut parts = h.comment.splitn(3, ' ');
            return Ok(Some(Conflict {
                what: e
                    .label
                    .clone()
                    .unwrap_or_else(|| format!("{} {}", e.set, e.key)),
                holder_network: parts.next().unwrap_or_default().into(),
                holder_id: parts.next().unwrap_or_default().into(),
                holder_ifname: parts.next().unwrap_or_default().into(),
            }));
        }
    }
    Ok(None)
}

/// Every record of every owner (GC).
pub fn all() -> Result<Vec<Record>, NftError> {
    let mut out = Vec::new();
    for owner in read_dir(&state_dir()) {
        for group in read_dir(&owner) {
            out.extend(records_in(&group)?);
        }
    }
    Ok(out)
}

/// The records of one group directory (temporary files left out).
fn records_in(dir: &Path) -> Result<Vec<Record>, NftError> {
    let mut out = Vec::new();
    for file in read_dir(dir) {
        if !is_tmp(&file) {
            out.extend(read_record(&file)?);
        }
    }
    Ok(out)
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// The records of `owner` in `group` (the attachments of one host interface).
pub fn group(owner: &str, group: &str) -> Result<Vec<Record>, NftError> {
    records_in(&state_dir().join(owner).join(group))
}

/// The record of (`owner`, container, interface), whichever network or group it is in.
pub fn find(owner: &str, container_id: &str, ifname: &str) -> Result<Option<Record>, NftError> {
    let name = file_name(container_id, ifname);
    for group in read_dir(&state_dir().join(owner)) {
        if let Some(rec) = read_record(&group.join(&name))? {
            return Ok(Some(rec));
        }
    }
    Ok(None)
}

/// Undoes the record of (`owner`, container, interface); `None` when there is none
/// (nothing to undo is success for DEL).
pub fn release(
    owner: &str,
    container_id: &str,
    ifname: &str,
) -> Result<Option<Released>, NftError> {
    let _lock = lock()?;
    let Some(record) = find(owner, container_id, ifname)? else {
        // An ADD that died while writing its journal left only the temporary file: its
        // elements were never applied (the journal comes first).
        let tmp = temp_name(container_id, ifname);
        for group in read_dir(&state_dir().join(owner)) {
            let _ = fs::remove_file(group.join(&tmp));
            let _ = fs::remove_dir(&group);
        }
        return Ok(None);
    };
    let path = record.path();
    let others_in_group = has_other(&record.group_dir(), &path);
    let last_in_group = record.group.is_some() && !others_in_group;
    let with_group = last_in_group || record.group.is_none();
    let last = !any_record_but(&path);
    if last {
        del_elements_and_tables(&record, with_group)?;
    } else {
        del_elements(&record, with_group)?;
    }
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(NftError::Journal(path, e)),
    }
    let _ = fs::remove_dir(record.group_dir());
    Ok(Some(Released {
        record,
        last_in_group,
        last,
    }))
}

fn is_tmp(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Whether `dir` holds a record other than `except`; reads only until the first one, so
/// the cost does not grow with the number of records.
fn has_other(dir: &Path, except: &Path) -> bool {
    fs::read_dir(dir)
        .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path() != except && !is_tmp(&e.path()))))
}

/// Whether any record exists (stops at the first).
pub(super) fn any_record() -> bool {
    any_record_but(Path::new(""))
}

/// Whether any record other than `except` exists (stops at the first).
fn any_record_but(except: &Path) -> bool {
    read_dir(&state_dir())
        .iter()
        .any(|owner| read_dir(owner).iter().any(|g| has_other(g, except)))
}

/// Whether `owner` has a record other than `except` (stops at the first): its chains
/// were made then.
fn has_other_of(owner: &str, except: &Path) -> bool {
    read_dir(&state_dir().join(owner))
        .iter()
        .any(|g| has_other(g, except))
}

/// What [`add_elements`] can expect to be in the kernel already (a flushed ruleset is
/// found by the ENOENT it gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// Not even podnet's tables.
    Nothing,
    /// The tables, not the record's own chains.
    Tables,
    /// The tables and the record's chains.
    Chains,
}

/// What [`restore`] put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Attachments whose elements were added again.
    pub records: usize,
    /// podnet's tables were missing (a flushed ruleset) and were made again.
    pub tables_created: bool,
    /// Host firewall chains opened again for podnet's bridges and DNS responders.
    pub host_chains: usize,
}

/// Puts back everything the journals say podnet has in the kernel, after a firewall
/// reload (`nft flush ruleset`, `systemctl restart nftables`, a firewalld reload) took
/// it: the tables when missing, every attachment's elements, the conditioned port-map
/// jumps, and the accepts in the host's drop-policy chains. Idempotent: what is there
/// stays as it is (elements are added, never created), so it runs at any time.
pub fn restore() -> Result<Restored, NftError> {
    restore_parts(true)
}

/// [`restore`] of the host-chain accepts only (another table's chains were created).
pub(super) fn reopen_host_chains() -> Result<Restored, NftError> {
    restore_parts(false)
}

fn restore_parts(tables: bool) -> Result<Restored, NftError> {
    let mut done = Restored::default();
    let _lock = lock()?;
    let records = all()?;
    if records.is_empty() {
        return Ok(done);
    }
    if tables {
        done.tables_created = restore_tables(&records)?;
        done.records = records.len();
    }
    // The host's own chains, under the same lock: a DEL closing a bridge cannot slip
    // between reading its record and opening its chains again.
    let mut opened = std::collections::BTreeSet::new();
    for r in &records {
        let Some(group) = r.group.as_deref() else {
            continue;
        };
        if !opened.insert((r.owner.as_str(), group)) {
            continue;
        }
        done.host_chains += match r.owner.as_str() {
            "firewall" => super::hostfw::open_bridge_locked(group)?,
            "dnsname" => match dns_port(r) {
                Some(port) => super::hostfw::open_dns_locked(group, port)?,
                None => 0,
            },
            _ => 0,
        };
    }
    Ok(done)
}

/// The tables (when missing, from the schema over netlink), the records' own set-up,
/// then every element over netlink, then the conditioned-map jumps. Whether tables
/// were made.
fn restore_tables(records: &[Record]) -> Result<bool, NftError> {
    let mut families: Vec<Family> = records.iter().flat_map(Record::table_families).collect();
    families.sort_by_key(|f| f.name());
    families.dedup();
    let mut missing = Vec::new();
    for f in families {
        if !wire::table_exists(f)? {
            missing.push(f);
        }
    }
    if !missing.is_empty() {
        wire::create_tables(&missing)?;
    }
    let mut own: Vec<&str> = records
        .iter()
        .flat_map(|r| r.chains.iter().map(String::as_str))
        .collect();
    own.sort_unstable();
    own.dedup();
    wire::create_chains(&own)?;
    let mut setup = Batch::default();
    for r in records {
        setup.0.extend(r.setup.iter().cloned());
    }
    apply(&setup)?;
    let comments: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.comment(), r.group_comment()))
        .collect();
    let ops: Vec<(Op, &Entry, Option<&str>)> = records
        .iter()
        .zip(&comments)
        .flat_map(|(r, c)| r.ops(|_| Op::Add, c, true))
        .collect();
    wire::apply(&ops)?;
    let add_chain = format!("add chain inet {TABLE} ");
    let mut chains: Vec<&str> = records
        .iter()
        .flat_map(|r| &r.setup)
        .filter_map(|l| l.strip_prefix(add_chain.as_str()))
        .filter(|c| c.starts_with(COND_CHAIN_PREFIX))
        .collect();
    chains.sort_unstable();
    chains.dedup();
    ensure_cond_jumps(&chains)?;
    Ok(!missing.is_empty())
}

/// The responder's port in a dnsname record (`"<bridge>" . udp . 53`).
fn dns_port(r: &Record) -> Option<u16> {
    r.entries
        .iter()
        .find(|e| e.set == "dns")
        .and_then(|e| e.key.rsplit(" . ").next())
        .and_then(|p| p.parse().ok())
}

/// Makes `portmap_cond` jump to each of the conditioned chains `chains` that it does not
/// jump to yet. The caller holds the table lock.
pub fn ensure_cond_jumps(chains: &[&str]) -> Result<(), NftError> {
    if chains.is_empty() {
        return Ok(());
    }
    let listed = query(&["list", "chain", "inet", TABLE, "portmap_cond"])?.unwrap_or_default();
    let mut b = Batch::default();
    for c in chains {
        let jump = format!("jump {c}");
        if !listed.lines().any(|l| l.trim() == jump) {
            b.push(format!("add rule inet {TABLE} portmap_cond {jump}"));
        }
    }
    apply(&b)
}

/// CHECK for one owner's attachment: its record exists and every element is in place.
pub fn check(owner: &str, container_id: &str, ifname: &str) -> Result<(), cni::CniError> {
    let failed = |m: String| cni::CniError::new(cni::ErrorCode::CHECK_FAILED, m);
    let rec = find(owner, container_id, ifname)?.ok_or_else(|| {
        failed(format!(
            "{owner} made no nftables elements for container {container_id} interface {ifname}"
        ))
    })?;
    verify(&rec).map_err(failed)
}

/// Checks that every element of `rec` is in the tables; the first missing one names
/// its set.
pub fn verify(rec: &Record) -> Result<(), String> {
    let mut sets: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for e in rec.entries.iter().chain(&rec.group_entries) {
        match sets
            .iter_mut()
            .find(|(f, s, _)| *f == e.family && *s == e.set)
        {
            Some((_, _, keys)) => keys.push(&e.key),
            None => sets.push((&e.family, &e.set, vec![&e.key])),
        }
    }
    for (family, set, keys) in sets {
        let elems = format!("{{ {} }}", keys.join(", "));
        let found =
            query(&["get", "element", family, TABLE, set, &elems]).map_err(|e| e.to_string())?;
        if found.is_none() {
            return Err(format!(
                "an element of set {set} of table {family} {TABLE} is missing (want {elems})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        let mut r = Record::new("portmap", "net1", "c1", "eth0");
        r.entries.push(
            Entry::inet("pm4any", "tcp . 8080")
                .with_value("10.88.0.5 . 80")
                .exclusive("host port tcp/8080"),
        );
        r.entries.push(Entry::inet("pmlocal4", "10.88.0.5"));
        r
    }

    #[test]
    fn add_and_del_operations() {
        let r = rec();
        let c = (r.comment(), r.group_comment());
        let create = |e: &Entry| if e.exclusive { Op::Create } else { Op::Add };
        let ops = r.ops(create, &c, true);
        assert_eq!(ops[0].0, Op::Create, "the host port is exclusive");
        assert_eq!(ops[1].0, Op::Add);
        assert_eq!(ops[0].2, Some("net1 c1 eth0"));
        assert_eq!(
            r.table_families(),
            [Family::Inet],
            "no bridge table for inet-only records"
        );
    }

    #[test]
    fn group_entries_follow_the_group() {
        let mut r = Record::new("firewall", "net1", "c1", "eth0");
        r.group = Some("cni0".into());
        r.group_entries.push(Entry::inet("isolated", "\"cni0\""));
        assert_eq!(r.path(), state_dir().join("firewall/cni0/c1.eth0"));
        let c = (r.comment(), r.group_comment());
        let with = r.ops(|_| Op::Add, &c, true);
        assert_eq!(with.len(), 1);
        assert_eq!(with[0].2, Some("bridge:cni0"));
        assert!(r.ops(|_| Op::Add, &c, false).is_empty());
    }
}
