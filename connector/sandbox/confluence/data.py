"""State of the fake Confluence Data Center server, and a seeded generator for it.

The state model follows what a real instance stores: users (username, immutable userKey, display name,
email, active/deactivated, licensed), groups with direct members (and a few nested groups), spaces
(global/personal, current/archived) and space permissions kept in the legacy key form
(VIEWSPACE, EDITSPACE, ...) per subject (user, group or anonymous). The REST view of permissions
(9.1+ `operationKey`/`targetType` pairs) is derived from that single store, so the JSON-RPC and REST
surfaces can never disagree.

Generation is deterministic for a given seed and size, so tests can compute expectations from the same
object the server serves.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

# Legacy space permission keys and the REST (targetType, operationKey) pair each maps to (spec B.6).
LEGACY_TO_REST: dict[str, tuple[str, str]] = {
    "VIEWSPACE": ("space", "read"),
    "REMOVEOWNCONTENT": ("space", "delete_own"),
    "EDITSPACE": ("page", "create"),
    "REMOVEPAGE": ("page", "delete"),
    "EDITBLOG": ("blogpost", "create"),
    "REMOVEBLOG": ("blogpost", "delete"),
    "COMMENT": ("comment", "create"),
    "REMOVECOMMENT": ("comment", "delete"),
    "CREATEATTACHMENT": ("attachment", "create"),
    "REMOVEATTACHMENT": ("attachment", "delete"),
    "SETPAGEPERMISSIONS": ("space", "restrict"),
    "REMOVEMAIL": ("space", "delete_mail"),
    "EXPORTSPACE": ("space", "export"),
    "SETSPACEPERMISSIONS": ("space", "administer"),
}
REST_TO_LEGACY: dict[tuple[str, str], str] = {v: k for k, v in LEGACY_TO_REST.items()}
PERMISSION_KEYS: tuple[str, ...] = tuple(LEGACY_TO_REST)
# Returned by getSpacePermissionSets next to VIEWSPACE on real servers; not a permission of its own.
ALIAS_KEYS: tuple[str, ...] = ("EXPORTPAGE",)

ADMIN_GROUP = "confluence-administrators"
USERS_GROUP = "confluence-users"

# Group names that break naive URL building: spaces, slashes, unicode, '%', '+', '&', '#', '?'.
ODD_GROUP_NAMES: tuple[str, ...] = (
    "qa/automation",
    "Dev Ops",
    "équipe-données",
    "R&D + Ops",
    "50% club",
    "ask?#why",
)
ODD_USERNAMES: tuple[str, ...] = ("zoë.müller", "first.last@corp.example")


def _words(text: str) -> list[str]:
    return text.split()


_FIRST = _words(
    "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil "
    "Trent Uma Victor Walter Xena Yusuf Zara Amir Bea Chen Dana Emil Fatima Goran Hana Ines Jun "
    "Kofi Lena Mateo "
)
_LAST = _words(
    "Smith Jones Brown Garcia Miller Davis Lopez Wilson Anderson Thomas Taylor Moore Jackson Martin "
    "Lee Perez Thompson White Harris Clark Lewis Young Walker Hall Allen King Wright Scott Green "
    "Baker Adams "
)
_WORDS = _words(
    "Apollo Borealis Cascade Delta Ember Falcon Glacier Harbor Indigo Juniper Kestrel Lumen "
    "Meridian Nimbus Orchid Pinnacle Quartz Raven Summit Tundra Umber Vertex Willow Xenon Yarrow "
    "Zephyr "
)


@dataclass
class User:
    username: str
    user_key: str
    display_name: str
    email: str
    active: bool = True
    licensed: bool = True
    password: str | None = None
    # Set by the admin create-user endpoint: what the server was asked to do.
    notify_via_email: bool = False


@dataclass
class Group:
    name: str
    members: list[str] = field(default_factory=list)  # usernames, in insertion order
    nested: list[str] = field(default_factory=list)  # names of direct child groups

    def __post_init__(self) -> None:
        self._member_set = set(self.members)

    def has(self, username: str) -> bool:
        return username in self._member_set

    def add(self, username: str) -> bool:
        if username in self._member_set:
            return False
        self._member_set.add(username)
        self.members.append(username)
        return True

    def rename(self, old: str, new: str) -> None:
        if old in self._member_set:
            self._member_set.discard(old)
            self._member_set.add(new)
            self.members[self.members.index(old)] = new

    def remove(self, username: str) -> bool:
        if username not in self._member_set:
            return False
        self._member_set.discard(username)
        self.members.remove(username)
        return True


@dataclass
class Space:
    id: int
    key: str
    name: str
    type: str = "global"  # global | personal
    status: str = "current"  # current | archived
    description: str = ""


# A space permission: (legacy key, subject kind "user"|"group"|"anonymous", username/group name or None).
Permission = tuple[str, str, str | None]


@dataclass
class SandboxData:
    """Everything the fake server knows. Mutated by provisioning endpoints."""

    users: dict[str, User] = field(default_factory=dict)  # by username, insertion (= listing) order
    groups: dict[str, Group] = field(default_factory=dict)
    spaces: dict[str, Space] = field(default_factory=dict)
    permissions: dict[str, list[Permission]] = field(default_factory=dict)  # by space key
    tokens: dict[str, str] = field(default_factory=dict)  # PAT -> username
    next_space_id: int = 100000

    def __post_init__(self) -> None:
        self._by_key = {u.user_key: u for u in self.users.values()}

    # --- users ---------------------------------------------------------------------------------

    def add_user(self, user: User) -> None:
        self.users[user.username] = user
        self._by_key[user.user_key] = user

    def user_by_key(self, key: str) -> User | None:
        return self._by_key.get(key)

    def rename_user(self, old: str, new: str) -> User:
        """What an administrator's rename does: a new username everywhere it is stored (memberships,
        space permissions, tokens), the same userKey. The user keeps its place in the listing."""
        user = self.users.get(old)
        if user is None:
            raise KeyError(f"no user {old!r}")
        if new in self.users:
            raise ValueError(f"username {new!r} is taken")
        user.username = new
        self.users = {(new if name == old else name): u for name, u in self.users.items()}
        for group in self.groups.values():
            group.rename(old, new)
        for key, perms in self.permissions.items():
            self.permissions[key] = [
                (k, kind, new if kind == "user" and name == old else name) for k, kind, name in perms
            ]
        for token, name in self.tokens.items():
            if name == old:
                self.tokens[token] = new
        return user

    def is_admin(self, username: str) -> bool:
        group = self.groups.get(ADMIN_GROUP)
        return group is not None and group.has(username)

    def groups_of(self, username: str) -> list[str]:
        return [g.name for g in self.groups.values() if g.has(username)]

    # --- permissions -----------------------------------------------------------------------------

    def space_permissions(self, space_key: str) -> list[Permission]:
        return self.permissions.setdefault(space_key, [])

    def has_permission(self, space_key: str, perm: Permission) -> bool:
        return perm in self.space_permissions(space_key)

    def add_permission(self, space_key: str, perm: Permission) -> bool:
        perms = self.space_permissions(space_key)
        if perm in perms:
            return False
        perms.append(perm)
        return True

    def remove_permission(self, space_key: str, perm: Permission) -> bool:
        perms = self.space_permissions(space_key)
        if perm not in perms:
            return False
        perms.remove(perm)
        return True

    def can_view(self, username: str | None, space_key: str) -> bool:
        """Whether a caller sees the space in /rest/api/space (admins see everything)."""
        perms = self.space_permissions(space_key)
        if username is None:
            return ("VIEWSPACE", "anonymous", None) in perms
        if self.is_admin(username):
            return True
        if ("VIEWSPACE", "user", username) in perms:
            return True
        return any(("VIEWSPACE", "group", g) in perms for g in self.groups_of(username))

    # --- expectations helpers for tests and the benchmark --------------------------------------

    def membership_count(self) -> int:
        return sum(len(g.members) for g in self.groups.values())

    def iter_permissions(self) -> Iterator[tuple[str, Permission]]:
        for key, perms in self.permissions.items():
            for p in perms:
                yield key, p


def _hex_key(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def generate(
    *,
    users: int = 40,
    groups: int = 12,
    memberships: int = 120,
    spaces: int = 8,
    seed: int = 7,
    odd_names: bool = True,
    disabled_fraction: float = 0.05,
    unlicensed_fraction: float = 0.05,
    personal_fraction: float = 0.1,
    archived_fraction: float = 0.05,
    anonymous_fraction: float = 0.2,
    everyone_view_spaces: int = 2,
    admin_group_on_spaces: bool = True,
) -> SandboxData:
    """A deterministic instance.

    `users` counts generated users besides the two fixed accounts (`admin`, `viewer`); `groups` counts all
    groups including `confluence-administrators` and `confluence-users`; `memberships` is the target total
    of direct memberships (confluence-users takes at most half of it, the rest is spread over the other
    groups); `spaces` counts all spaces. `everyone_view_spaces` caps how many spaces grant VIEWSPACE to
    confluence-users (each such grant expands to every licensed user, which is what real sites do but
    would dominate a large sync).
    """
    rng = random.Random(seed)
    data = SandboxData()

    admin = User("admin", _hex_key(rng), "Administrator", "admin@example.com", password="admin")
    viewer = User("viewer", _hex_key(rng), "Read Only Viewer", "viewer@example.com", password="viewer")
    data.add_user(admin)
    data.add_user(viewer)
    data.tokens["admin-pat"] = "admin"
    data.tokens["viewer-pat"] = "viewer"

    names: list[str] = []
    odd_users = list(ODD_USERNAMES) if odd_names else []
    for i in range(users):
        username = odd_users[i] if i < len(odd_users) else f"user{i:05d}"
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        display = f"{first} {last}"
        email = f"{username}@example.com" if "@" not in username else username
        user = User(username, _hex_key(rng), display, email, password=f"pw-{username}")
        r = rng.random()
        # Positions 2 and 3 are always a deactivated and an unlicensed user, so every data set has both.
        if i == 2 or (i != 3 and r < disabled_fraction):
            user.active = False
        elif i == 3 or r < disabled_fraction + unlicensed_fraction:
            user.licensed = False
        data.add_user(user)
        names.append(username)

    # Groups: the two built-ins, the odd names, then generated team groups.
    group_names = [ADMIN_GROUP, USERS_GROUP]
    if odd_names:
        group_names.extend(ODD_GROUP_NAMES[: max(0, groups - 2)])
    i = 0
    while len(group_names) < groups:
        group_names.append(f"team-{rng.choice(_WORDS).lower()}-{i:04d}")
        i += 1
    for name in group_names[:groups] if groups >= 2 else group_names:
        data.groups[name] = Group(name)

    admins = data.groups[ADMIN_GROUP]
    everyone = data.groups[USERS_GROUP]
    admins.add("admin")
    everyone.add("admin")
    everyone.add("viewer")
    licensed = [n for n in names if data.users[n].licensed]
    for n in licensed[: max(0, memberships // 2)]:
        everyone.add(n)
    # A couple of generated admins so the admin group is not a singleton.
    for n in names[:2]:
        admins.add(n)

    others = [g for g in data.groups.values() if g.name not in (ADMIN_GROUP, USERS_GROUP)]
    remaining = memberships - data.membership_count()
    if others and names:
        capacity = len(others) * len(names)
        remaining = min(remaining, capacity)
        attempts, max_attempts = 0, remaining * 20 + 1000
        while remaining > 0 and attempts < max_attempts:
            attempts += 1
            g = others[rng.randrange(len(others))]
            # Unlicensed users belong to no group (no "can use" permission): real sites have such users.
            u = names[rng.randrange(len(names))]
            if not data.users[u].licensed:
                continue
            if g.add(u):
                remaining -= 1
        if len(others) >= 3:
            others[0].nested.append(others[1].name)
            others[2].nested.append(others[0].name)

    # Spaces.
    space_id = 98000
    personal_candidates = [n for n in names if data.users[n].active]
    everyone_left = everyone_view_spaces
    for s in range(spaces):
        space_id += 17
        if s == 0:
            key, name = "ENG", "Engineering"
            stype = "global"
        elif rng.random() < personal_fraction and personal_candidates:
            owner = personal_candidates[rng.randrange(len(personal_candidates))]
            personal_candidates.remove(owner)
            key, name, stype = f"~{owner}", data.users[owner].display_name, "personal"
        else:
            key = f"SP{s:04d}"
            name = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {s}"
            stype = "global"
        status = "archived" if (s > 0 and rng.random() < archived_fraction) else "current"
        data.spaces[key] = Space(space_id, key, name, stype, status, f"Space {name}")
        perms = data.space_permissions(key)
        if admin_group_on_spaces:
            for k in PERMISSION_KEYS:
                perms.append((k, "group", ADMIN_GROUP))
        # A personal space belongs to its user; the creator of a global space administers it.
        creator = names[rng.randrange(len(names))] if names else "admin"
        owner = key[1:] if stype == "personal" else creator
        if stype == "personal" or not admin_group_on_spaces:
            for k in PERMISSION_KEYS:
                perms.append((k, "user", owner))
        if everyone_left > 0 and stype == "global":
            everyone_left -= 1
            perms.append(("VIEWSPACE", "group", USERS_GROUP))
            perms.append(("COMMENT", "group", USERS_GROUP))
        if others:
            for g in rng.sample(others, k=min(len(others), rng.randint(1, 2))):
                perms.append(("VIEWSPACE", "group", g.name))
                if rng.random() < 0.5:
                    perms.append(("EDITSPACE", "group", g.name))
        if names:
            for u in rng.sample(names, k=min(len(names), rng.randint(1, 3))):
                perms.append(("VIEWSPACE", "user", u))
                for k in rng.sample(PERMISSION_KEYS[1:], k=rng.randint(0, 3)):
                    perms.append((k, "user", u))
        # ENG is always open to anonymous readers (when any space is), so every data set has the case.
        if rng.random() < anonymous_fraction or (s == 0 and anonymous_fraction > 0):
            perms.append(("VIEWSPACE", "anonymous", None))
            if rng.random() < 0.5:
                perms.append(("EXPORTSPACE", "anonymous", None))
        # De-duplicate while keeping order (sampled users may repeat a key).
        data.permissions[key] = list(dict.fromkeys(perms))
    data.next_space_id = space_id + 17
    return data


def small(seed: int = 7) -> SandboxData:
    """The default data set for tests and the demo: every awkward case, small enough to reason about."""
    return generate(seed=seed)


def sized(users: int, groups: int, memberships: int, spaces: int, seed: int = 7) -> SandboxData:
    """A large data set (benchmark). Space permissions are held by each space's creator and by team groups;
    confluence-users and confluence-administrators hold none, since every such grant expands to every
    member (19k users for confluence-users) and would make the benchmark measure grant expansion only."""
    return generate(
        users=users,
        groups=groups,
        memberships=memberships,
        spaces=spaces,
        seed=seed,
        everyone_view_spaces=0,
        admin_group_on_spaces=False,
    )


# The eight space permissions of the expansion-heavy data set (issue 16's scenario).
HEAVY_PERMISSION_KEYS: tuple[str, ...] = (
    "VIEWSPACE",
    "COMMENT",
    "CREATEATTACHMENT",
    "EDITBLOG",
    "EDITSPACE",
    "EXPORTSPACE",
    "REMOVEATTACHMENT",
    "REMOVEBLOG",
)


def expansion_heavy(
    *,
    users: int = 20_000,
    groups: int = 1_000,
    members_per_group: int = 40,
    spaces: int = 500,
    users_per_space: int = 5,
    groups_per_space: int = 3,
    seed: int = 7,
) -> SandboxData:
    """A data set whose grants are mostly derived: every space gives the eight HEAVY_PERMISSION_KEYS to
    `users_per_space` users and `groups_per_space` groups, and every group (the two built-ins included)
    has exactly `members_per_group` direct members, so each group-held permission expands to that many
    users. `users` counts generated users besides `admin` and `viewer`; `groups` counts all groups.
    Nothing is nested, anonymous, personal or archived: the shape is what the benchmark measures."""
    rng = random.Random(seed)
    data = SandboxData()
    data.add_user(User("admin", _hex_key(rng), "Administrator", "admin@example.com", password="admin"))
    data.add_user(User("viewer", _hex_key(rng), "Read Only Viewer", "viewer@example.com", password="viewer"))
    data.tokens["admin-pat"] = "admin"
    data.tokens["viewer-pat"] = "viewer"
    names: list[str] = []
    for i in range(users):
        username = f"user{i:05d}"
        display = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        data.add_user(User(username, _hex_key(rng), display, f"{username}@example.com"))
        names.append(username)
    group_names = [ADMIN_GROUP, USERS_GROUP]
    group_names += [f"team-{rng.choice(_WORDS).lower()}-{i:04d}" for i in range(max(0, groups - 2))]
    for name in group_names[: max(groups, 1)]:
        group = data.groups[name] = Group(name)
        # The admin account's rights come from confluence-administrators; it counts as one of the members.
        first = ["admin"] if name == ADMIN_GROUP else []
        for member in first + rng.sample(names, k=min(len(names), members_per_group - len(first))):
            group.add(member)
    teams = list(data.groups)[2:] or list(data.groups)
    space_id = 98000
    for s in range(spaces):
        space_id += 17
        key = f"SP{s:04d}"
        name = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {s}"
        data.spaces[key] = Space(space_id, key, name, "global", "current", f"Space {name}")
        holders = [("user", u) for u in rng.sample(names, k=min(len(names), users_per_space))]
        holders += [("group", g) for g in rng.sample(teams, k=min(len(teams), groups_per_space))]
        data.permissions[key] = [(k, kind, who) for kind, who in holders for k in HEAVY_PERMISSION_KEYS]
    data.next_space_id = space_id + 17
    return data
