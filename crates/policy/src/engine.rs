//! One adopted policy: the validated Cedar policy set and its views, and the three decisions,
//! cached per policy version.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, OnceLock, RwLock};

use accord_domain::payload::AgencyKind;
use accord_domain::{Role, SensitivityTag};
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::{Error, RecordKind, Result, SCHEMA, SCHEMA_VERSION, ViewDef};

/// The id a decision names when no policy allowed it.
const DEFAULT_DENY: &str = "default-deny";
/// The deciding "policy" of a refusal because a policy failed to evaluate (followed by the ids
/// of the policies that failed).
const EVALUATION_ERROR: &str = "evaluation-error";
/// Cached decisions per policy before the cache is emptied and starts again.
const CACHE_LIMIT: usize = 100_000;

/// An agency as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct AgencyFacts<'a> {
    /// The agency id.
    pub id: &'a str,
    /// Its kind.
    pub kind: AgencyKind,
    /// Whether its admins may adopt sharing policy.
    pub governs_policy: bool,
}

/// A user acting for an agency in some roles.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The user's agency.
    pub agency: AgencyFacts<'a>,
    /// The user id.
    pub user: &'a str,
    /// The roles the user acts in. Roles no policy names carry no rights.
    pub roles: &'a [Role],
}

/// A record (one event) as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct RecordFacts<'a> {
    /// The full event type.
    pub event_type: &'a str,
    /// Its sharing-matrix kind (for a correction, the kind of the corrected record).
    pub kind: RecordKind,
    /// The agency that wrote it.
    pub author: AgencyFacts<'a>,
    /// Its sensitivity tags (`EventBody.sensitivity`).
    pub tags: &'a [SensitivityTag],
}

/// A sensitivity tag's name in policies.
fn tag_name(t: SensitivityTag) -> &'static str {
    t.as_str()
}

/// How a principal's agency stands to a record. The read models compute it from the log; every
/// flag defaults to false, which can only take rights away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Relation {
    /// The principal's agency wrote the record.
    pub authored: bool,
    /// The record is addressed to the principal's agency.
    pub addressed: bool,
    /// The principal's agency is allocated to the record's case.
    pub case_member: bool,
    /// The nominal is under MAPPA management and the principal's agency sits on its panel.
    pub mappa_panel: bool,
    /// A current consent covers this recipient.
    pub consent_in_scope: bool,
}

/// An allow or deny, with the policies that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// For an allow, the permits that matched; for a deny, the forbids that matched, or
    /// `default-deny` when no permit did.
    pub policy_ids: Vec<String>,
    /// The version (log position) of the policy that decided.
    pub policy_version: u64,
    /// Policies that failed to evaluate; any error makes the decision a deny (fail closed).
    pub errors: Vec<String>,
}

/// The field groups of a record a user may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewDecision {
    /// The union of the allowed views' field groups; empty when the user sees nothing.
    pub field_groups: BTreeSet<String>,
    /// The views allowed.
    pub views: Vec<String>,
    /// The deciding policies: the `receive` decision's, then each allowed view's permits.
    pub policy_ids: Vec<String>,
    /// The version (log position) of the policy that decided.
    pub policy_version: u64,
}

impl ViewDecision {
    /// Whether the user may see anything of the record.
    pub fn allowed(&self) -> bool {
        !self.field_groups.is_empty()
    }
}

/// The schema's actions; each indexes its uid in `Names::actions` and its policies in
/// `Policy::by_action`.
#[derive(Debug, Clone, Copy)]
enum Action {
    Append = 0,
    Receive = 1,
    View = 2,
}

struct Names {
    agency: EntityTypeName,
    role: EntityTypeName,
    user: EntityTypeName,
    record: EntityTypeName,
    view: EntityTypeName,
    actions: [EntityUid; 3],
}

fn schema() -> &'static (Schema, Names) {
    static SCHEMA_AND_NAMES: OnceLock<(Schema, Names)> = OnceLock::new();
    SCHEMA_AND_NAMES.get_or_init(|| {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA).expect("the built-in schema parses");
        let ty = |n: &str| EntityTypeName::from_str(n).expect("a type name");
        let action = |a: &str| EntityUid::from_type_name_and_id(ty("Accord::Action"), EntityId::new(a));
        let names = Names {
            agency: ty("Accord::Agency"),
            role: ty("Accord::Role"),
            user: ty("Accord::User"),
            record: ty("Accord::Record"),
            view: ty("Accord::View"),
            actions: [action("append"), action("receive"), action("view")],
        };
        (schema, names)
    })
}

/// What a cached decision depends on: every fact Cedar is given. Agency and user ids are part of
/// it only when some policy names an agency or a user literally; otherwise the only way a policy
/// can tell agencies apart is by comparing two of them, which `same_agency` captures.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Append { actor: ActorKey, record: RecordKey, same_agency: bool, addressee_kinds: Vec<&'static str> },
    Receive { agency: AgencyKey, record: RecordKey, same_agency: bool, rel: Relation },
    View { actor: ActorKey, record: RecordKey, same_agency: bool, rel: Relation },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AgencyKey {
    id: Option<String>,
    kind: AgencyKind,
    governs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ActorKey {
    agency: AgencyKey,
    user: Option<String>,
    roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RecordKey {
    event_type: String,
    kind: RecordKind,
    author: AgencyKey,
    tags: Vec<&'static str>,
}

/// A compiled, validated policy: the sharing agreements in force from its version (the log
/// position of the `PolicyAdopted` event that carried it) on.
pub struct Policy {
    version: u64,
    text: String,
    set: PolicySet,
    /// The policies that can apply to each action (append, receive, view): Cedar evaluates
    /// every policy of the set it is given, so each decision gets only its action's.
    by_action: [PolicySet; 3],
    views: Vec<ViewDef>,
    views_by_kind: HashMap<RecordKind, Vec<usize>>,
    names_users: bool,
    names_agencies: bool,
    authorizer: Authorizer,
    decisions: RwLock<HashMap<Key, Arc<Decision>>>,
    view_decisions: RwLock<HashMap<Key, Arc<ViewDecision>>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("version", &self.version)
            .field("policies", &self.set.num_of_policies())
            .field("views", &self.views.len())
            .finish()
    }
}

fn check_view(v: &ViewDef) -> Result<RecordKind> {
    let at = format!("views[{}]", v.id);
    let id_ok = !v.id.is_empty()
        && v.id.len() <= 128
        && v.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        && v.id.rsplit_once(".v").is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !id_ok {
        return Err(Error::Invalid(format!(
            "{at}.id: must be lowercase letters, digits, `_` and `.` ending in a version like `.v1`, found {:?}",
            v.id
        )));
    }
    let kind = RecordKind::parse(&v.record_kind).ok_or_else(|| {
        let kinds: Vec<_> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
        Error::Invalid(format!("{at}.record_kind: must be one of {}, found {:?}", kinds.join(", "), v.record_kind))
    })?;
    if v.field_groups.is_empty() {
        return Err(Error::Invalid(format!("{at}.field_groups: must name at least one field group")));
    }
    if let Some(g) =
        v.field_groups.iter().find(|g| g.is_empty() || !g.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    {
        return Err(Error::Invalid(format!("{at}.field_groups: must be lowercase letters and `_`, found {g:?}")));
    }
    Ok(kind)
}

impl Policy {
    /// Parses, names and validates `policies` (Cedar) with `views` against schema
    /// `schema_version`. Every policy needs a unique `@id("…")` annotation: decisions and the
    /// access log name it. Refused with the parser's or validator's messages otherwise.
    pub fn compile(version: u64, schema_version: u32, policies: &str, views: Vec<ViewDef>) -> Result<Policy> {
        if schema_version != SCHEMA_VERSION {
            return Err(Error::Invalid(format!(
                "schema_version: this server validates policy against schema version {SCHEMA_VERSION}, found {schema_version}"
            )));
        }
        let (schema, names) = schema();
        let parsed = PolicySet::from_str(policies).map_err(|e| {
            let details: Vec<String> = e.iter().map(|d| d.to_string()).collect();
            Error::Invalid(format!("policies: do not parse: {}", details.join("; ")))
        })?;
        if parsed.num_of_templates() > 0 {
            return Err(Error::Invalid("policies: templates are not supported; write each policy in full".into()));
        }
        let mut set = PolicySet::new();
        let mut view_literals = Vec::new();
        let (mut names_users, mut names_agencies) = (false, false);
        for p in parsed.policies() {
            let id = p.annotation("id").ok_or_else(|| {
                Error::Invalid(format!("policies: every policy needs an @id(\"…\") annotation, found none on {p}"))
            })?;
            if id.is_empty()
                || id == DEFAULT_DENY
                || id == EVALUATION_ERROR
                || id.len() > 128
                || id.chars().any(char::is_whitespace)
            {
                return Err(Error::Invalid(format!(
                    "policies: @id must be 1 to 128 characters without spaces and not {DEFAULT_DENY:?} or {EVALUATION_ERROR:?}, found {id:?}"
                )));
            }
            for uid in p.entity_literals() {
                let ty = uid.type_name();
                if *ty == names.user {
                    names_users = true;
                } else if *ty == names.agency {
                    names_agencies = true;
                } else if *ty == names.view {
                    view_literals.push((id.to_owned(), uid.id().unescaped().to_owned()));
                }
            }
            set.add(p.new_id(PolicyId::new(id)))
                .map_err(|_| Error::Invalid(format!("policies: @id {id:?} is used by more than one policy")))?;
        }
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result.validation_errors().map(|e| format!("{}: {e}", e.policy_id())).collect();
            return Err(Error::Invalid(format!(
                "policies: do not validate against schema version {SCHEMA_VERSION}: {}",
                errors.join("; ")
            )));
        }

        let mut views_by_kind: HashMap<RecordKind, Vec<usize>> = HashMap::new();
        let mut seen = HashSet::new();
        for (i, v) in views.iter().enumerate() {
            let kind = check_view(v)?;
            if !seen.insert(v.id.as_str()) {
                return Err(Error::Invalid(format!("views: id {:?} is defined more than once", v.id)));
            }
            views_by_kind.entry(kind).or_default().push(i);
        }
        if let Some((policy, view)) = view_literals.iter().find(|(_, v)| !seen.contains(v.as_str())) {
            return Err(Error::Invalid(format!(
                "policies: {policy} names view {view:?}, which the views do not define"
            )));
        }

        let mut by_action = [PolicySet::new(), PolicySet::new(), PolicySet::new()];
        for p in set.policies() {
            for (i, a) in names.actions.iter().enumerate() {
                let applies = match p.action_constraint() {
                    cedar_policy::ActionConstraint::Any => true,
                    cedar_policy::ActionConstraint::Eq(x) => x == *a,
                    cedar_policy::ActionConstraint::In(xs) => xs.contains(a),
                };
                if applies {
                    by_action[i].add(p.clone()).expect("ids are unique in the full set");
                }
            }
        }

        Ok(Policy {
            version,
            text: policies.to_owned(),
            set,
            by_action,
            views,
            views_by_kind,
            names_users,
            names_agencies,
            authorizer: Authorizer::new(),
            decisions: RwLock::new(HashMap::new()),
            view_decisions: RwLock::new(HashMap::new()),
        })
    }

    /// The log position of the `PolicyAdopted` event that carried this policy.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The policy text as adopted.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The views as adopted.
    pub fn views(&self) -> &[ViewDef] {
        &self.views
    }

    /// The ids of the policies in the set.
    pub fn policy_ids(&self) -> Vec<String> {
        self.set.policies().map(|p| p.id().to_string()).collect()
    }

    /// May `actor` write `record` addressed to agencies of `addressee_kinds`?
    pub fn append(&self, actor: &Actor<'_>, record: &RecordFacts<'_>, addressee_kinds: &[AgencyKind]) -> Arc<Decision> {
        let mut kinds: Vec<&'static str> = addressee_kinds.iter().map(|k| k.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let key = Key::Append {
            actor: self.actor_key(actor),
            record: self.record_key(record),
            same_agency: actor.agency.id == record.author.id,
            addressee_kinds: kinds.clone(),
        };
        self.cached(&self.decisions, key, || {
            let (user, mut entities) = self.user_entities(actor);
            let (rec, rec_entities) = self.record_entities(record);
            entities.extend(rec_entities);
            let context = Context::from_pairs([(
                "addressee_kinds".to_owned(),
                RestrictedExpression::new_set(kinds.iter().map(|k| RestrictedExpression::new_string((*k).to_owned()))),
            )])
            .expect("a valid context");
            self.decide(user, Action::Append, rec, context, entities)
        })
    }

    /// May `agency` hold `record` in its read models, standing to it as `rel`?
    pub fn receive(&self, agency: &AgencyFacts<'_>, record: &RecordFacts<'_>, rel: Relation) -> Arc<Decision> {
        let key = Key::Receive {
            agency: self.agency_key(agency),
            record: self.record_key(record),
            same_agency: agency.id == record.author.id,
            rel,
        };
        self.cached(&self.decisions, key, || {
            let (rec, mut entities) = self.record_entities(record);
            let principal = self.agency_uid(agency.id);
            entities.push(self.agency_entity(agency));
            let context = Context::from_pairs(relation_pairs(rel)).expect("a valid context");
            self.decide(principal, Action::Receive, rec, context, entities)
        })
    }

    /// Which field groups of `record` may `actor` see, their agency standing to it as `rel`?
    /// Nothing unless the actor's agency may receive the record; otherwise the union of the
    /// field groups of every view of the record's kind the policy lets the actor use.
    pub fn view(&self, actor: &Actor<'_>, record: &RecordFacts<'_>, rel: Relation) -> Arc<ViewDecision> {
        let key = Key::View {
            actor: self.actor_key(actor),
            record: self.record_key(record),
            same_agency: actor.agency.id == record.author.id,
            rel,
        };
        self.cached(&self.view_decisions, key, || {
            let received = self.receive(&actor.agency, record, rel);
            let mut out = ViewDecision {
                field_groups: BTreeSet::new(),
                views: Vec::new(),
                policy_ids: received.policy_ids.clone(),
                policy_version: self.version,
            };
            if !received.allowed {
                return out;
            }
            let names = &schema().1;
            let (user, mut base) = self.user_entities(actor);
            let (rec, rec_entities) = self.record_entities(record);
            base.extend(rec_entities);
            for &i in self.views_by_kind.get(&record.kind).map(Vec::as_slice).unwrap_or(&[]) {
                let v = &self.views[i];
                let mut entities = base.clone();
                let view_uid = EntityUid::from_type_name_and_id(names.view.clone(), EntityId::new(&v.id));
                entities.push(
                    Entity::new(
                        view_uid.clone(),
                        HashMap::from([
                            ("record_kind".to_owned(), RestrictedExpression::new_string(v.record_kind.clone())),
                            (
                                "field_groups".to_owned(),
                                RestrictedExpression::new_set(
                                    v.field_groups.iter().map(|g| RestrictedExpression::new_string(g.clone())),
                                ),
                            ),
                        ]),
                        HashSet::new(),
                    )
                    .expect("a valid view entity"),
                );
                let context = Context::from_pairs([
                    ("record".to_owned(), RestrictedExpression::new_entity_uid(rec.clone())),
                    (
                        "rel".to_owned(),
                        RestrictedExpression::new_record(relation_pairs(rel)).expect("a valid relation record"),
                    ),
                ])
                .expect("a valid context");
                let d = self.decide(user.clone(), Action::View, view_uid, context, entities);
                if d.allowed {
                    out.field_groups.extend(v.field_groups.iter().cloned());
                    out.views.push(v.id.clone());
                    out.policy_ids.extend(d.policy_ids);
                }
            }
            out
        })
    }

    fn cached<T>(&self, cache: &RwLock<HashMap<Key, Arc<T>>>, key: Key, compute: impl FnOnce() -> T) -> Arc<T> {
        if let Some(d) = cache.read().expect("decision cache").get(&key) {
            return d.clone();
        }
        let d = Arc::new(compute());
        let mut w = cache.write().expect("decision cache");
        if w.len() >= CACHE_LIMIT {
            w.clear();
        }
        w.insert(key, d.clone());
        d
    }

    fn decide(
        &self,
        principal: EntityUid,
        action: Action,
        resource: EntityUid,
        context: Context,
        mut entities: Vec<Entity>,
    ) -> Decision {
        // One span per Cedar evaluation (decisions are cached, so a repeat costs none). No
        // principal or resource: they name users and records, and spans may be exported.
        let span = tracing::info_span!(
            "policy.decide",
            action = ?action,
            policy_version = self.version,
            allowed = tracing::field::Empty,
            policy_ids = tracing::field::Empty,
        );
        let _g = span.enter();
        // The author is often the principal's own agency: one entity per uid.
        let mut seen = HashSet::new();
        entities.retain(|e| seen.insert(e.uid()));
        let entities = Entities::from_entities(entities, None).expect("entities built here are well formed");
        let uid = schema().1.actions[action as usize].clone();
        let request = Request::new(principal, uid, resource, context, None).expect("a request without schema");
        let response = self.authorizer.is_authorized(&request, &self.by_action[action as usize], &entities);
        let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
        // Cedar skips a policy that fails to evaluate; a skipped forbid must not let a permit
        // through, so any evaluation error denies.
        let allowed = response.decision() == cedar_policy::Decision::Allow && errors.is_empty();
        let mut policy_ids: Vec<String> = if errors.is_empty() {
            response.diagnostics().reason().map(|id| id.to_string()).collect()
        } else {
            // The refusal is the failed evaluation's, not the permits' that matched.
            let failed = response.diagnostics().errors().map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => e.policy_id().to_string(),
            });
            std::iter::once(EVALUATION_ERROR.to_owned()).chain(failed).collect()
        };
        policy_ids.sort();
        policy_ids.dedup();
        if policy_ids.is_empty() {
            policy_ids.push(DEFAULT_DENY.to_owned());
        }
        span.record("allowed", allowed);
        span.record("policy_ids", policy_ids.join(",").as_str());
        Decision { allowed, policy_ids, policy_version: self.version, errors }
    }

    fn agency_key(&self, a: &AgencyFacts<'_>) -> AgencyKey {
        AgencyKey { id: self.names_agencies.then(|| a.id.to_owned()), kind: a.kind, governs: a.governs_policy }
    }

    fn actor_key(&self, a: &Actor<'_>) -> ActorKey {
        let mut roles: Vec<String> = a.roles.iter().map(|r| r.as_str().to_owned()).collect();
        roles.sort_unstable();
        roles.dedup();
        ActorKey { agency: self.agency_key(&a.agency), user: self.names_users.then(|| a.user.to_owned()), roles }
    }

    fn record_key(&self, r: &RecordFacts<'_>) -> RecordKey {
        let mut tags: Vec<&'static str> = r.tags.iter().map(|t| tag_name(*t)).collect();
        tags.sort_unstable();
        tags.dedup();
        RecordKey { event_type: r.event_type.to_owned(), kind: r.kind, author: self.agency_key(&r.author), tags }
    }

    fn agency_uid(&self, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(schema().1.agency.clone(), EntityId::new(id))
    }

    fn agency_entity(&self, a: &AgencyFacts<'_>) -> Entity {
        Entity::new(
            self.agency_uid(a.id),
            HashMap::from([
                ("kind".to_owned(), RestrictedExpression::new_string(a.kind.as_str().to_owned())),
                ("governs_policy".to_owned(), RestrictedExpression::new_bool(a.governs_policy)),
            ]),
            HashSet::new(),
        )
        .expect("a valid agency entity")
    }

    /// The user entity, its roles and its agency.
    fn user_entities(&self, actor: &Actor<'_>) -> (EntityUid, Vec<Entity>) {
        let names = &schema().1;
        let roles: HashSet<EntityUid> = actor
            .roles
            .iter()
            .map(|r| EntityUid::from_type_name_and_id(names.role.clone(), EntityId::new(r.as_str())))
            .collect();
        let mut entities: Vec<Entity> = roles.iter().map(|r| Entity::new_no_attrs(r.clone(), HashSet::new())).collect();
        let user = EntityUid::from_type_name_and_id(names.user.clone(), EntityId::new(actor.user));
        entities.push(
            Entity::new(
                user.clone(),
                HashMap::from([(
                    "agency".to_owned(),
                    RestrictedExpression::new_entity_uid(self.agency_uid(actor.agency.id)),
                )]),
                roles,
            )
            .expect("a valid user entity"),
        );
        entities.push(self.agency_entity(&actor.agency));
        (user, entities)
    }

    /// The record entity and its author agency (the author is left out when it is the same
    /// agency as one already present, which the caller adds).
    fn record_entities(&self, record: &RecordFacts<'_>) -> (EntityUid, Vec<Entity>) {
        let names = &schema().1;
        let uid = EntityUid::from_type_name_and_id(names.record.clone(), EntityId::new("record"));
        let entity = Entity::new(
            uid.clone(),
            HashMap::from([
                ("event_type".to_owned(), RestrictedExpression::new_string(record.event_type.to_owned())),
                ("kind".to_owned(), RestrictedExpression::new_string(record.kind.as_str().to_owned())),
                ("author".to_owned(), RestrictedExpression::new_entity_uid(self.agency_uid(record.author.id))),
                (
                    "tags".to_owned(),
                    RestrictedExpression::new_set(
                        record.tags.iter().map(|t| RestrictedExpression::new_string(tag_name(*t).to_owned())),
                    ),
                ),
            ]),
            HashSet::new(),
        )
        .expect("a valid record entity");
        (uid, vec![entity, self.agency_entity(&record.author)])
    }
}

fn relation_pairs(rel: Relation) -> Vec<(String, RestrictedExpression)> {
    [
        ("authored", rel.authored),
        ("addressed", rel.addressed),
        ("case_member", rel.case_member),
        ("mappa_panel", rel.mappa_panel),
        ("consent_in_scope", rel.consent_in_scope),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), RestrictedExpression::new_bool(v)))
    .collect()
}

/// The agencies that stand in some relation to a record: the only candidates for `receive`, so
/// deciding who holds a record never scans every agency.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parties<'a> {
    /// The authoring agency.
    pub author: &'a str,
    /// The agencies it is addressed to.
    pub addressees: &'a [&'a str],
    /// The agencies allocated to its case (managing the nominal, supporting the victim).
    pub case_members: &'a [&'a str],
    /// The agencies on the nominal's MAPPA panel, when under MAPPA management.
    pub mappa_panel: &'a [&'a str],
    /// The agencies a current consent covers.
    pub consent_recipients: &'a [&'a str],
}

impl<'a> Parties<'a> {
    /// Each candidate agency once, with its relation to the record, in a stable order (the
    /// author first, then by first mention).
    pub fn candidates(&self) -> Vec<(&'a str, Relation)> {
        let mut out: Vec<(&'a str, Relation)> = Vec::new();
        let mut mark = |id: &'a str, set: &dyn Fn(&mut Relation)| match out.iter_mut().find(|(a, _)| *a == id) {
            Some((_, r)) => set(r),
            None => {
                let mut r = Relation::default();
                set(&mut r);
                out.push((id, r));
            }
        };
        mark(self.author, &|r| r.authored = true);
        for a in self.addressees {
            mark(a, &|r| r.addressed = true);
        }
        for a in self.case_members {
            mark(a, &|r| r.case_member = true);
        }
        for a in self.mappa_panel {
            mark(a, &|r| r.mappa_panel = true);
        }
        for a in self.consent_recipients {
            mark(a, &|r| r.consent_in_scope = true);
        }
        out
    }
}

impl Policy {
    /// Which of the record's [`Parties`] may hold it, with the decision for each (allowed or
    /// not, for the audit trail). `agency` looks up an agency's facts; an unknown agency receives
    /// nothing.
    pub fn receivers<'p>(
        &self,
        record: &RecordFacts<'_>,
        parties: &Parties<'p>,
        agency: impl Fn(&str) -> Option<AgencyFacts<'p>>,
    ) -> Vec<(&'p str, Arc<Decision>)> {
        parties
            .candidates()
            .into_iter()
            .filter_map(|(id, rel)| agency(id).map(|facts| (id, self.receive(&facts, record, rel))))
            .collect()
    }
}
