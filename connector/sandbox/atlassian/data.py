"""State of the fake Atlassian organization, and a seeded generator for it.

The model follows the admin API's own (spec C.1): one organization with one directory, accounts with an
account status (active / inactive / closed) and a directory membership status (active / suspended /
no_membership) from which the composite `status` is derived, groups (some synced from an identity provider
and therefore read-only), workspaces (product instances, ids are ARIs), product-role assignments to users and
to groups, and API tokens.

Role assignments are eventually consistent, as the real API documents ("may take up to 30 seconds"): writes
land in the *intended* state at once and in the *visible* state (what reads return) after a configurable
delay.

Generation is deterministic for a given seed and size, so tests and the benchmark can compute expectations
from the same object the server serves.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# Roles each product offers, as Atlassian spells them. The sandbox rejects other roles for a product with
# ADMIN-UAM-400-3, which is how the real service answers "role not available on this workspace".
PRODUCT_ROLES: dict[str, tuple[str, ...]] = {
    "jira-software": ("atlassian/user", "atlassian/admin", "atlassian/user-access-admin", "atlassian/guest"),
    "jira-core": ("atlassian/user", "atlassian/admin", "atlassian/user-access-admin"),
    "jira-servicedesk": (
        "atlassian/user",
        "atlassian/admin",
        "atlassian/user-access-admin",
        "atlassian/customer",
        "atlassian/stakeholder",
    ),
    "jira-product-discovery": ("atlassian/user", "atlassian/admin", "atlassian/contributor"),
    "jira-admin": ("atlassian/admin",),
    "confluence": ("atlassian/user", "atlassian/admin", "atlassian/user-access-admin", "atlassian/guest"),
    "loom": ("atlassian/user", "atlassian/admin", "atlassian/basic"),
    "trello": ("atlassian/user", "atlassian/admin"),
}

# Product mix cycled over sites; several products share one site (same cloudId, different typeKeys).
_SITE_PRODUCTS: tuple[tuple[str, ...], ...] = (
    ("jira-software", "confluence", "jira-admin"),
    ("jira-servicedesk", "confluence", "jira-product-discovery"),
    ("jira-software", "loom", "trello"),
    ("jira-core", "confluence"),
)
_PRODUCT_NAMES = {
    "jira-software": "Jira",
    "jira-core": "Jira Work Management",
    "jira-servicedesk": "Jira Service Management",
    "jira-product-discovery": "Jira Product Discovery",
    "jira-admin": "Jira Administration",
    "confluence": "Confluence",
    "loom": "Loom",
    "trello": "Trello",
}

_FIRST = [
    "Ada",
    "Ben",
    "Cleo",
    "Dev",
    "Esme",
    "Finn",
    "Gita",
    "Hugo",
    "Iris",
    "Jonas",
    "Kira",
    "Liam",
    "Maya",
    "Noor",
    "Omar",
    "Pia",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Uri",
    "Vera",
    "Wen",
    "Xavi",
    "Yara",
    "Zeno",
    "Anya",
    "Bruno",
    "Chiara",
    "Dmitri",
    "Elif",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "Jala",
    "Kai",
    "Lotte",
    "Mika",
]
_LAST = [
    "Abe",
    "Baker",
    "Chen",
    "Diaz",
    "Eze",
    "Fox",
    "Gupta",
    "Haas",
    "Ito",
    "Jensen",
    "Kaur",
    "Lund",
    "Moreau",
    "Novak",
    "Okafor",
    "Park",
    "Quist",
    "Rossi",
    "Sato",
    "Tanaka",
    "Ueda",
    "Varga",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zhou",
    "Almeida",
    "Berg",
    "Costa",
    "Dahl",
]
_DEPARTMENTS = ("Engineering", "Sales", "Support", "Finance", "Marketing", "Legal", "People", "Design")
_TITLES = ("Engineer", "Manager", "Analyst", "Designer", "Director", "Specialist", "Lead")
_LOCATIONS = ("Sydney", "Austin", "Amsterdam", "Bengaluru", "Gdansk", "San Francisco", "Tokyo")
_ZONES = ("Australia/Sydney", "America/Chicago", "Europe/Amsterdam", "Asia/Kolkata", "Asia/Tokyo")
_GROUP_WORDS = [
    "eng",
    "platform",
    "mobile",
    "web",
    "data",
    "infra",
    "sec",
    "sales",
    "support",
    "finance",
    "legal",
    "people",
    "design",
    "qa",
    "ops",
    "growth",
    "billing",
    "search",
    "payments",
    "identity",
    "analytics",
    "docs",
    "release",
    "api",
]

UNBILLED_ROLES = frozenset({"atlassian/guest", "atlassian/customer"})
VERIFIED_DOMAIN = "acme.example"
UNVERIFIED_DOMAIN = "mail.example"
_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class OrgSpec:
    """Size and shape of the generated organization."""

    seed: int = 7
    accounts: int = 300
    groups: int = 25
    memberships: int = 900
    workspaces: int = 6
    # Direct product-role assignments per human account, on average.
    direct_roles_per_user: float = 0.6
    # Share of groups that hold a workspace role (their members inherit it).
    role_group_ratio: float = 0.12
    synced_group_ratio: float = 0.15
    # API tokens per human account, on average.
    tokens_per_user: float = 0.25


@dataclass
class User:
    account_id: str
    account_type: str  # atlassian | app | customer
    account_status: str  # active | inactive | closed
    membership_status: str  # active | suspended | no_membership
    name: str
    nickname: str
    email: str | None
    email_verified: bool
    claim_status: str  # managed | unmanaged
    management_source: str | None  # invited | synced | None
    mfa_enabled: bool
    added_to_org: str
    job_title: str | None = None
    department: str | None = None
    organization: str | None = None
    location: str | None = None
    time_zone: str | None = None
    for_deletion: bool = False
    deactivated_on: str | None = None
    platform_roles: list[str] = field(default_factory=list)
    # Role assignments on resources that are neither workspaces nor the organization: (owner, ARI, role),
    # owner `project` or `goal` (Atlas / Townsquare).
    other_roles: list[tuple[str, str, str]] = field(default_factory=list)
    # workspace id -> last active timestamp (ISO) for product access reporting
    last_active: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """The composite status the v2 API reports (spec A.4.3)."""
        if self.for_deletion:
            return "for_deletion"
        if self.account_status != "active":
            return "deactivated"
        if self.membership_status == "no_membership":
            return "not_invited"
        if self.membership_status == "suspended":
            return "suspended"
        return "active"


@dataclass
class Group:
    id: str
    name: str
    description: str
    directory_id: str
    external_synced: bool
    managed_by: str  # external | admins | team-members | open

    @property
    def modifiable(self) -> bool:
        return not self.external_synced


@dataclass
class Workspace:
    id: str  # ARI
    name: str
    type_key: str
    cloud_id: str
    host_url: str
    status: str  # online | offline | deprecated
    sandbox: bool
    capacity: int
    created_at: str
    # Roles this instance offers. Defaults to its product's; tests may add roles a connector's own table
    # does not know (Atlassian adds roles per product and plan).
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.roles:
            self.roles = PRODUCT_ROLES.get(self.type_key, ("atlassian/user", "atlassian/admin"))


@dataclass
class ApiToken:
    id: str
    label: str
    status: str  # ALLOWED | BLOCKED | EXPIRED
    created_at: str
    expires_at: str
    last_active_at: str | None
    account_id: str


@dataclass
class ScimUser:
    id: str
    account_id: str
    user_name: str
    display_name: str
    active: bool
    created: str
    email: str = ""


RoleKey = tuple[str, str]  # (workspace id, role)


class RoleStore:
    """Product-role assignments to users and groups, with read-after-write delay.

    `intended_*` always reflects every accepted write; `visible_*` (and the per-role indexes used by
    filters) lag by `delay` seconds. `settle()` applies due changes and is called before every read.
    """

    def __init__(self, delay: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.delay = delay
        self.clock = clock
        self.intended_user: dict[str, dict[str, set[str]]] = {}
        self.intended_group: dict[str, dict[str, set[str]]] = {}
        self.visible_user: dict[str, dict[str, set[str]]] = {}
        self.visible_group: dict[str, dict[str, set[str]]] = {}
        self.users_by_role: dict[RoleKey, set[str]] = {}
        self.groups_by_role: dict[RoleKey, set[str]] = {}
        self.intended_users_by_role: dict[RoleKey, set[str]] = {}
        self.intended_groups_by_role: dict[RoleKey, set[str]] = {}
        self._pending: deque[tuple[float, str, str, str, str, bool]] = deque()
        self.version = 0

    @staticmethod
    def _apply(
        by_principal: dict[str, dict[str, set[str]]], principal: str, ws: str, role: str, add: bool
    ) -> bool:
        roles = by_principal.setdefault(principal, {}).setdefault(ws, set())
        if add == (role in roles):
            return False
        if add:
            roles.add(role)
        else:
            roles.discard(role)
            if not roles:
                del by_principal[principal][ws]
        return True

    def has(self, kind: str, principal: str, ws: str, role: str) -> bool:
        store = self.intended_user if kind == "user" else self.intended_group
        return role in store.get(principal, {}).get(ws, set())

    def _apply_intended(self, kind: str, principal: str, ws: str, role: str, add: bool) -> bool:
        store = self.intended_user if kind == "user" else self.intended_group
        index = self.intended_users_by_role if kind == "user" else self.intended_groups_by_role
        if not self._apply(store, principal, ws, role, add):
            return False
        holders = index.setdefault((ws, role), set())
        if add:
            holders.add(principal)
        else:
            holders.discard(principal)
        return True

    def change(self, kind: str, principal: str, ws: str, role: str, add: bool) -> bool:
        """Record a write; False when it changes nothing (already assigned / not assigned)."""
        if not self._apply_intended(kind, principal, ws, role, add):
            return False
        self._pending.append((self.clock() + self.delay, kind, principal, ws, role, add))
        if self.delay <= 0:
            self.settle()
        return True

    def seed(self, kind: str, principal: str, ws: str, role: str) -> None:
        """Initial data: visible at once."""
        self._apply_intended(kind, principal, ws, role, True)
        self._apply_visible(kind, principal, ws, role, True)

    def _apply_visible(self, kind: str, principal: str, ws: str, role: str, add: bool) -> None:
        visible = self.visible_user if kind == "user" else self.visible_group
        index = self.users_by_role if kind == "user" else self.groups_by_role
        if self._apply(visible, principal, ws, role, add):
            members = index.setdefault((ws, role), set())
            if add:
                members.add(principal)
            else:
                members.discard(principal)
            self.version += 1

    def settle(self) -> None:
        now = self.clock()
        while self._pending and self._pending[0][0] <= now:
            _, kind, principal, ws, role, add = self._pending.popleft()
            self._apply_visible(kind, principal, ws, role, add)

    def user_roles(self, account_id: str) -> dict[str, set[str]]:
        return self.visible_user.get(account_id, {})

    def group_roles(self, group_id: str) -> dict[str, set[str]]:
        return self.visible_group.get(group_id, {})


class OrgState:
    """Everything the fake organization knows. Mutations bump `version` so that query caches expire."""

    def __init__(self, rng: random.Random, role_delay: float = 0.0) -> None:
        self.rng = rng
        self.org_id = _uuid(rng)
        self.org_name = "Acme Sandbox"
        self.directory_id = _uuid(rng)
        self.directory_name = "Primary Directory"
        self.scim_directory_id = _uuid(rng)
        self.other_org_id = _uuid(rng)
        self.users: dict[str, User] = {}
        self.groups: dict[str, Group] = {}
        self.workspaces: dict[str, Workspace] = {}
        self.tokens: list[ApiToken] = []
        self.group_members: dict[str, set[str]] = {}
        self.user_groups: dict[str, set[str]] = {}
        self.roles = RoleStore(role_delay)
        self.scim_users: dict[str, ScimUser] = {}
        self._version = 0

    # --- versioning -------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version * 1_000_003 + self.roles.version

    def touch(self) -> None:
        self._version += 1

    # --- lookups ---------------------------------------------------------------------------------

    def user_by_email(self, email: str) -> User | None:
        wanted = email.strip().lower()
        for u in self.users.values():
            if u.email is not None and u.email.lower() == wanted:
                return u
        return None

    def members(self, group_id: str) -> set[str]:
        return self.group_members.get(group_id, set())

    def effective_users(self, ws: str, role: str) -> set[str]:
        """Users holding `role` on `ws` directly or through a group (visible state)."""
        out = set(self.roles.users_by_role.get((ws, role), set()))
        for gid in self.roles.groups_by_role.get((ws, role), set()):
            out |= self.members(gid)
        return out

    def direct_users(self, ws: str, role: str) -> set[str]:
        """Users holding `role` on `ws` by a direct assignment (visible state), whatever their groups."""
        return set(self.roles.users_by_role.get((ws, role), set()))

    def user_assignment_methods(self, account_id: str) -> dict[str, dict[str, list[str]]]:
        """workspace -> role -> methods (direct / group_direct) for one user (visible state)."""
        out: dict[str, dict[str, list[str]]] = {}
        for ws, roles in self.roles.user_roles(account_id).items():
            for role in roles:
                out.setdefault(ws, {}).setdefault(role, []).append("direct")
        for gid in sorted(self.user_groups.get(account_id, set())):
            for ws, roles in self.roles.group_roles(gid).items():
                for role in roles:
                    methods = out.setdefault(ws, {}).setdefault(role, [])
                    if "group_direct" not in methods:
                        methods.append("group_direct")
        return out

    def seat_holders(self, ws: str) -> set[str]:
        """Users who consume a seat on `ws` (intended state): anyone with a non-guest role there."""
        holders: set[str] = set()
        for role in self.workspaces[ws].roles:
            if role in UNBILLED_ROLES:
                continue
            holders |= self.roles.intended_users_by_role.get((ws, role), set())
            for gid in self.roles.intended_groups_by_role.get((ws, role), set()):
                holders |= self.members(gid)
        return holders

    def seat_usage(self, ws: str) -> int:
        return len(self.seat_holders(ws))

    # --- mutations --------------------------------------------------------------------------------

    def add_member(self, group_id: str, account_id: str) -> bool:
        members = self.group_members.setdefault(group_id, set())
        if account_id in members:
            return False
        members.add(account_id)
        self.user_groups.setdefault(account_id, set()).add(group_id)
        self.touch()
        return True

    def remove_member(self, group_id: str, account_id: str) -> bool:
        members = self.group_members.get(group_id, set())
        if account_id not in members:
            return False
        members.discard(account_id)
        self.user_groups.get(account_id, set()).discard(group_id)
        self.touch()
        return True

    def new_account(
        self,
        email: str,
        *,
        name: str = "",
        management_source: str | None = "invited",
    ) -> User:
        local, _, domain = email.partition("@")
        account_id = f"{self.rng.getrandbits(96):024x}"
        user = User(
            account_id=account_id,
            account_type="atlassian",
            account_status="active",
            membership_status="active",
            name=name or local.replace(".", " ").title(),
            nickname=local,
            email=email,
            email_verified=False,
            claim_status="managed" if domain.lower() == VERIFIED_DOMAIN else "unmanaged",
            management_source=management_source,
            mfa_enabled=False,
            added_to_org=iso(dt.datetime.now(dt.UTC)),
        )
        self.users[account_id] = user
        self.touch()
        return user

    def workspace_for_resource(self, resource: str) -> Workspace | None:
        return self.workspaces.get(resource)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _weighted_indices(rng: random.Random, n: int, k: int, skew: float) -> list[int]:
    """k draws from range(n) with a Zipf-like skew (a few big groups, many small ones)."""
    weights = [1.0 / (i + 1) ** skew for i in range(n)]
    return rng.choices(range(n), weights=weights, k=k)


def generate(spec: OrgSpec | None = None, *, role_delay: float = 0.0) -> OrgState:
    """A deterministic organization for `spec` (same seed and sizes → same ids and data)."""
    spec = spec or OrgSpec()
    rng = random.Random(spec.seed)
    state = OrgState(rng, role_delay)

    _make_workspaces(state, spec)
    _make_users(state, spec)
    _make_groups(state, spec)
    _make_memberships(state, spec)
    _make_roles(state, spec)
    _make_tokens(state, spec)
    _make_platform_roles(state, spec)
    # Seat capacity: plenty everywhere except the first online jira-software workspace, which is full so
    # that the license-limit answer can be exercised.
    full_done = False
    for ws in state.workspaces.values():
        usage = state.seat_usage(ws.id)
        if not full_done and ws.type_key == "jira-software" and ws.status == "online" and not ws.sandbox:
            ws.capacity = usage
            full_done = True
        else:
            ws.capacity = max(usage * 2, 100)
    return state


def _make_workspaces(state: OrgState, spec: OrgSpec) -> None:
    rng = state.rng
    made = 0
    site = 0
    while made < spec.workspaces:
        cloud_id = _uuid(rng)
        products = _SITE_PRODUCTS[site % len(_SITE_PRODUCTS)]
        site_name = f"acme{site if site else ''}"
        is_sandbox = site == 3
        for type_key in products:
            if made >= spec.workspaces:
                break
            status = "online"
            # One offline and one deprecated instance, as real orgs accumulate.
            if site == 2 and type_key == "trello":
                status = "offline"
            if site == 1 and type_key == "jira-product-discovery":
                status = "deprecated"
            ari = f"ari:cloud:{type_key}::site/{cloud_id}"
            created = _EPOCH + dt.timedelta(days=rng.randint(0, 300))
            state.workspaces[ari] = Workspace(
                id=ari,
                name=f"{site_name}{'-sandbox' if is_sandbox else ''} {_PRODUCT_NAMES[type_key]}",
                type_key=type_key,
                cloud_id=cloud_id,
                host_url=f"https://{site_name}{'-sandbox' if is_sandbox else ''}.atlassian.net",
                status=status,
                sandbox=is_sandbox,
                capacity=0,
                created_at=iso(created),
            )
            made += 1
        site += 1


def _make_users(state: OrgState, spec: OrgSpec) -> None:
    rng = state.rng
    ws_ids = list(state.workspaces)
    used_nicks: set[str] = set()
    for i in range(spec.accounts):
        first = rng.choice(_FIRST)
        last = rng.choice(_LAST)
        nick = f"{first}.{last}".lower()
        if nick in used_nicks:
            nick = f"{nick}{i}"
        used_nicks.add(nick)
        roll = rng.random()
        is_app = roll < 0.03
        added = _EPOCH + dt.timedelta(days=rng.randint(0, 600), seconds=rng.randint(0, 86_399))
        if is_app:
            account_id = f"557058:{_uuid(rng)}"
            user = User(
                account_id=account_id,
                account_type="app",
                account_status="active",
                membership_status="active",
                name=f"{rng.choice(_GROUP_WORDS).title()} Bot {i}",
                nickname=f"bot-{i}",
                email=None,  # app accounts have no email
                email_verified=False,
                claim_status="unmanaged",
                management_source=None,
                mfa_enabled=False,
                added_to_org=iso(added),
            )
        else:
            account_id = f"{rng.getrandbits(96):024x}"
            managed = rng.random() < 0.9
            domain = VERIFIED_DOMAIN if managed else UNVERIFIED_DOMAIN
            hidden = rng.random() < 0.02  # profile visibility hides the email
            user = User(
                account_id=account_id,
                account_type="atlassian",
                account_status="active",
                membership_status="active",
                name=f"{first} {last}",
                nickname=nick,
                email=None if hidden else f"{nick}@{domain}",
                email_verified=not hidden,
                claim_status="managed" if managed else "unmanaged",
                management_source=rng.choice(("invited", "synced", None)),
                mfa_enabled=rng.random() < 0.7,
                added_to_org=iso(added),
                job_title=rng.choice(_TITLES),
                department=rng.choice(_DEPARTMENTS),
                organization="Acme",
                location=rng.choice(_LOCATIONS),
                time_zone=rng.choice(_ZONES),
            )
            status_roll = rng.random()
            if status_roll < 0.04:
                user.membership_status = "suspended"
            elif status_roll < 0.08:
                user.account_status = "inactive"
                user.deactivated_on = iso(added + dt.timedelta(days=30))
            elif status_roll < 0.09:
                user.account_status = "closed"
                user.for_deletion = True
            elif status_roll < 0.11:
                user.membership_status = "no_membership"
            if i == 0 or rng.random() < 0.005:
                user.platform_roles.append("atlassian/org-admin")
            for ws in rng.sample(ws_ids, k=min(len(ws_ids), rng.randint(0, 3))):
                seen = added + dt.timedelta(days=rng.randint(0, 200), seconds=rng.randint(0, 86_399))
                user.last_active[ws] = iso(seen)
        state.users[account_id] = user


def _make_groups(state: OrgState, spec: OrgSpec) -> None:
    rng = state.rng
    used: set[str] = set()
    for i in range(spec.groups):
        base = f"{rng.choice(_GROUP_WORDS)}-{rng.choice(_GROUP_WORDS)}"
        name = base if base not in used else f"{base}-{i}"
        used.add(name)
        synced = rng.random() < spec.synced_group_ratio
        gid = _uuid(rng)
        state.groups[gid] = Group(
            id=gid,
            name=name,
            description=f"The {name.replace('-', ' ')} team",
            directory_id=state.directory_id,
            external_synced=synced,
            managed_by="external" if synced else rng.choice(("admins", "admins", "team-members", "open")),
        )
        state.group_members[gid] = set()


def _make_memberships(state: OrgState, spec: OrgSpec) -> None:
    rng = state.rng
    gids = list(state.groups)
    uids = [u.account_id for u in state.users.values() if u.status != "not_invited"]
    if not gids or not uids:
        return
    target = min(spec.memberships, len(gids) * len(uids))
    count = 0
    # Draw in rounds so that duplicates (same user, same group) are replaced until the target is met.
    while count < target:
        need = target - count
        picks = _weighted_indices(rng, len(gids), need, 0.8)
        for gi in picks:
            gid = gids[gi]
            uid = uids[rng.randrange(len(uids))]
            members = state.group_members[gid]
            if uid in members:
                continue
            members.add(uid)
            state.user_groups.setdefault(uid, set()).add(gid)
            count += 1


def _make_roles(state: OrgState, spec: OrgSpec) -> None:
    rng = state.rng
    ws_list = list(state.workspaces.values())
    if not ws_list:
        return
    humans = [u for u in state.users.values() if u.account_type == "atlassian" and u.status != "not_invited"]
    total_direct = int(len(humans) * spec.direct_roles_per_user)
    for _ in range(total_direct):
        user = humans[rng.randrange(len(humans))]
        ws = ws_list[rng.randrange(len(ws_list))]
        roles = ws.roles
        # Mostly plain product access; a few admins and the product-specific extras.
        role = roles[0] if rng.random() < 0.85 or len(roles) == 1 else rng.choice(roles[1:])
        state.roles.seed("user", user.account_id, ws.id, role)
    gids = list(state.groups)
    for gid in gids:
        if rng.random() >= spec.role_group_ratio:
            continue
        for ws in rng.sample(ws_list, k=min(len(ws_list), rng.randint(1, 2))):
            role = ws.roles[0] if rng.random() < 0.8 else rng.choice(ws.roles)
            state.roles.seed("group", gid, ws.id, role)
    # Apps act on products too.
    for user in state.users.values():
        if user.account_type == "app":
            ws = ws_list[rng.randrange(len(ws_list))]
            state.roles.seed("user", user.account_id, ws.id, ws.roles[0])


PLATFORM_ROLES = ("atlassian/site-admin", "atlassian/user-access-admin", "atlassian/ai-access")


def _make_platform_roles(state: OrgState, spec: OrgSpec) -> None:
    """Organization-level roles besides org-admin, and project / goal assignments.

    Drawn from a generator of their own so that everything generated before keeps its values.
    """
    rng = random.Random(spec.seed * 7919 + 13)
    humans = [u for u in state.users.values() if u.account_type == "atlassian" and u.status == "active"]
    if not humans:
        return
    for i, role in enumerate(PLATFORM_ROLES):
        for user in rng.sample(humans, k=min(len(humans), 2 + i)):
            if role not in user.platform_roles:
                user.platform_roles.append(role)
    for owner, product in (("project", "townsquare"), ("goal", "townsquare")):
        for user in rng.sample(humans, k=min(len(humans), 3)):
            ari = f"ari:cloud:{product}::{owner}/{_uuid(rng)}"
            user.other_roles.append((owner, ari, "atlassian/contributor"))


def _make_tokens(state: OrgState, spec: OrgSpec) -> None:
    rng = state.rng
    humans = [u for u in state.users.values() if u.account_type == "atlassian"]
    if not humans:
        return
    count = int(len(humans) * spec.tokens_per_user)
    labels = ("ci", "backup script", "reporting", "cli", "terraform", "zapier", "dashboard")
    for _ in range(count):
        user = humans[rng.randrange(len(humans))]
        created = _EPOCH + dt.timedelta(days=rng.randint(0, 500), seconds=rng.randint(0, 86_399))
        expires = created + dt.timedelta(days=365)
        last = created + dt.timedelta(days=rng.randint(0, 90)) if rng.random() < 0.7 else None
        state.tokens.append(
            ApiToken(
                id=_uuid(rng),
                label=rng.choice(labels),
                status=rng.choice(("ALLOWED", "ALLOWED", "ALLOWED", "BLOCKED", "EXPIRED")),
                created_at=iso(created),
                expires_at=iso(expires),
                last_active_at=iso(last) if last else None,
                account_id=user.account_id,
            )
        )
