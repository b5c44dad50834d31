"""The knowledge base's schema in PostgreSQL and its migrations, shared by the agent runtime
(which checks the schema is current) and the operator (which applies them with the admin login
before it gives a namespace its own login). Who may read what is in docs/security.md."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

logger = logging.getLogger(__name__)

# "overseer" in ASCII: the key of the advisory lock that serializes migrations across pods.
MIGRATION_LOCK = 0x6F76657273656572


# ---- schema --------------------------------------------------------------------------------

_SCHEMA_V1 = r"""
CREATE TABLE checkpoints (
    goal_uid       text PRIMARY KEY,
    iteration      integer NOT NULL DEFAULT 0,
    message_count  integer NOT NULL DEFAULT 0,
    todos          jsonb NOT NULL DEFAULT '{}',
    counters       jsonb NOT NULL DEFAULT '{}',
    last_write     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per message, appended: a checkpoint never rewrites the history before it.
CREATE TABLE checkpoint_messages (
    goal_uid  text NOT NULL REFERENCES checkpoints (goal_uid) ON DELETE CASCADE,
    seq       integer NOT NULL,
    message   jsonb NOT NULL,
    PRIMARY KEY (goal_uid, seq)
);

-- Error messages that differ only in numbers, paths and ids group together.
CREATE FUNCTION overseer_normalize_error(err text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(left(
        regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
            lower(regexp_replace(btrim(err), '\s+', ' ', 'g')),
            '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'g'),
            '\m0x[0-9a-f]+\M', '<hex>', 'g'),
            '\m(?=[0-9a-f]*[0-9])[0-9a-f]{7,}\M', '<hex>', 'g'),
            '(?:[a-z]:)?(?:[\w.~-]*/)+[\w.~-]+/?', '<path>', 'g'),
            '\d+(?:\.\d+)*', '<n>', 'g'),
        300), '')
$$;

-- The approach: the first tools used, repeats of one tool in a row collapsed.
CREATE FUNCTION overseer_approach(actions jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(string_agg(tool, ' > ' ORDER BY n), '')
    FROM (SELECT tool, n, row_number() OVER (ORDER BY n) AS step
          FROM (SELECT a ->> 'tool' AS tool, n, lag(a ->> 'tool') OVER (ORDER BY n) AS previous
                FROM jsonb_array_elements(actions) WITH ORDINALITY AS t (a, n)) steps
          WHERE previous IS DISTINCT FROM tool) collapsed
    WHERE step <= 6
$$;

-- The key actions in words: "bash (pytest -x: 1 failed) → edit_file (parser.py) → ...".
CREATE FUNCTION overseer_steps(actions jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT left(coalesce(string_agg(a ->> 'tool'
               || CASE WHEN coalesce(a ->> 'outcome', '') = '' THEN ''
                       ELSE ' (' || left(a ->> 'outcome', 60) || ')' END,
               ' → ' ORDER BY n) FILTER (WHERE n <= 8), '')
           || CASE WHEN count(*) > 8 THEN ' → …' ELSE '' END, 400)
    FROM jsonb_array_elements(actions) WITH ORDINALITY AS t (a, n)
$$;

CREATE TABLE experiences (
    id                uuid PRIMARY KEY,
    goal_uid          text NOT NULL,
    goal_name         text NOT NULL,
    namespace         text NOT NULL,
    agent             text NOT NULL,
    description       text NOT NULL,
    context_summary   text NOT NULL DEFAULT '',
    actions           jsonb NOT NULL DEFAULT '[]',
    outcome           text NOT NULL DEFAULT '',
    success           boolean NOT NULL,
    tokens            bigint NOT NULL DEFAULT 0,
    duration_seconds  double precision NOT NULL DEFAULT 0,
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    search            tsvector GENERATED ALWAYS AS (
                          setweight(to_tsvector('english', left(description, 4000)), 'A')
                          || setweight(to_tsvector('english', left(outcome, 2000)), 'B')) STORED,
    approach          text GENERATED ALWAYS AS (overseer_approach(actions)) STORED,
    error_key         text GENERATED ALWAYS AS (overseer_normalize_error(error)) STORED
);
-- fastupdate off: a pending list would be scanned in full by every search until vacuumed.
CREATE INDEX experiences_search ON experiences USING gin (search) WITH (fastupdate = off);
-- Lessons take the most recent matches: with a common query the planner walks this index
-- backwards and stops early; with a rare one it takes the GIN index.
CREATE INDEX experiences_created ON experiences (created_at);
CREATE INDEX experiences_goal_uid ON experiences (goal_uid);

-- What an agent did and what went wrong, aggregated over all goals: 'success' patterns are
-- tool sequences (counted for every goal that followed one, succeeded or not), 'error'
-- patterns normalized error messages. `search` is the pattern's own text.
CREATE TABLE patterns (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                 text NOT NULL CHECK (kind IN ('success', 'error')),
    agent                text NOT NULL,
    key                  text NOT NULL,
    task                 text NOT NULL,
    detail               text NOT NULL,
    outcome              text,
    success_count        integer NOT NULL DEFAULT 0,
    failure_count        integer NOT NULL DEFAULT 0,
    usage_count          integer NOT NULL DEFAULT 0,
    usage_success_count  integer NOT NULL DEFAULT 0,
    first_seen           timestamptz NOT NULL DEFAULT now(),
    last_seen            timestamptz NOT NULL DEFAULT now(),
    search               tsvector GENERATED ALWAYS AS (
                             to_tsvector('english', left(detail, 1000) || ' '
                                                    || coalesce(left(outcome, 500), ''))) STORED,
    UNIQUE (kind, agent, key)
);
CREATE INDEX patterns_search ON patterns USING gin (search) WITH (fastupdate = off);
CREATE INDEX patterns_last_seen ON patterns (last_seen);

CREATE TABLE lesson_usage (
    write_id    text NOT NULL,
    pattern_id  bigint NOT NULL REFERENCES patterns (id) ON DELETE CASCADE,
    goal_uid    text,
    success     boolean NOT NULL,
    used_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (write_id, pattern_id)
);
CREATE INDEX lesson_usage_pattern ON lesson_usage (pattern_id);

CREATE TABLE decisions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    goal_uid     text NOT NULL,
    approval_id  text NOT NULL,
    kind         text NOT NULL,
    summary      text NOT NULL DEFAULT '',
    decision     text NOT NULL CHECK (decision IN ('approved', 'denied')),
    decided_by   text NOT NULL,
    decided_at   timestamptz NOT NULL,
    reason       text NOT NULL DEFAULT '',
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (goal_uid, approval_id)
);

-- Patterns from the experiences one statement inserted (a single goal or a seeded million).
CREATE FUNCTION overseer_learn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO patterns AS p (kind, agent, key, task, detail, outcome, success_count, failure_count,
                               first_seen, last_seen)
    SELECT 'success', agent, approach,
           (array_agg(description ORDER BY success DESC, created_at DESC))[1],
           (array_agg(overseer_steps(actions) ORDER BY success DESC, created_at DESC))[1],
           (array_agg(outcome ORDER BY created_at DESC) FILTER (WHERE success))[1],
           count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success),
           min(created_at), max(created_at)
    FROM new_experiences
    WHERE approach IS NOT NULL
    GROUP BY agent, approach
    ON CONFLICT (kind, agent, key) DO UPDATE SET
        task = CASE WHEN EXCLUDED.success_count > 0 OR p.success_count = 0 THEN EXCLUDED.task ELSE p.task END,
        detail = CASE WHEN EXCLUDED.success_count > 0 OR p.success_count = 0 THEN EXCLUDED.detail ELSE p.detail END,
        outcome = coalesce(EXCLUDED.outcome, p.outcome),
        success_count = p.success_count + EXCLUDED.success_count,
        failure_count = p.failure_count + EXCLUDED.failure_count,
        last_seen = greatest(p.last_seen, EXCLUDED.last_seen);

    INSERT INTO patterns AS p (kind, agent, key, task, detail, outcome, success_count, failure_count,
                               first_seen, last_seen)
    SELECT 'error', agent, error_key,
           (array_agg(description ORDER BY created_at DESC))[1],
           (array_agg(left(error, 300) ORDER BY created_at DESC))[1],
           (array_agg(outcome ORDER BY created_at DESC) FILTER (WHERE success))[1],
           count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success),
           min(created_at), max(created_at)
    FROM new_experiences
    WHERE error_key IS NOT NULL
    GROUP BY agent, error_key
    ON CONFLICT (kind, agent, key) DO UPDATE SET
        task = EXCLUDED.task,
        detail = EXCLUDED.detail,
        outcome = coalesce(EXCLUDED.outcome, p.outcome),
        success_count = p.success_count + EXCLUDED.success_count,
        failure_count = p.failure_count + EXCLUDED.failure_count,
        last_seen = greatest(p.last_seen, EXCLUDED.last_seen);
    RETURN NULL;
END
$$;

CREATE TRIGGER experiences_learn AFTER INSERT ON experiences
    REFERENCING NEW TABLE AS new_experiences
    FOR EACH STATEMENT EXECUTE FUNCTION overseer_learn();
"""

# Migration 2 once created a function that seeded synthetic experiences for the benchmarks; the
# benchmarks hold it now (e2e/bench/knowledge.py), so the version is kept, empty, and migration 4
# drops the function from databases that got it. Every database ends with the same schema.
_SCHEMA_V2 = "SELECT 1;"

# Tenants: each Kubernetes namespace reads and writes only its own rows, enforced by row-level
# security, whatever SQL its agents send. A namespace gets a login role (overseer_provision_tenant,
# run by the operator with the admin login), a member of the agents' group role, which holds the
# table privileges; the tables stay owned by the admin role, which agents never get. The tenant of
# a connection is found from session_user, which no SET ROLE or set_config changes.
# Rows from before this migration keep the namespace they recorded (experiences) or the one
# of an experience of the same goal; the rest get '' and no tenant reads them. A pattern whose
# experiences came from one namespace goes to it; one mixed from several gets ''.
_SCHEMA_V3 = r"""
-- Role names are cluster-wide, so they carry the database: team-a@overseer.
CREATE FUNCTION overseer_role_name(base text) RETURNS name
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN octet_length(base || '@' || current_database()) <= 63
                THEN base || '@' || current_database()
                ELSE left(base, 40) || '@' || left(md5(base || '@' || current_database()), 22) END::name
$$;

-- `password_sha256`: of the password last given to the login, so the operator can tell whether the
-- Secret it wrote still holds it (the random password cannot be found from its hash).
CREATE TABLE knowledge_tenants (
    namespace        text PRIMARY KEY,
    role             name NOT NULL UNIQUE,
    password_sha256  text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- The agent `agent` of `namespace` shares its experiences and patterns with `reader` ('*': every
-- namespace). Written by the operator from the owner's Agent (spec.knowledge.shareWith) only.
CREATE TABLE knowledge_shares (
    namespace  text NOT NULL,
    agent      text NOT NULL,
    reader     text NOT NULL,
    PRIMARY KEY (namespace, agent, reader)
);
CREATE INDEX knowledge_shares_reader ON knowledge_shares (reader);

-- search_path pinned, pg_temp last: a tenant's temporary table must not stand in for the mapping.
DO $do$ BEGIN
EXECUTE format($f$
CREATE FUNCTION overseer_tenant() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = %I, pg_catalog, pg_temp AS
'SELECT namespace FROM knowledge_tenants WHERE role = session_user'
$f$, current_schema());
END $do$;

-- Namespaces everywhere; keys include them, so no tenant can take another's goal id.
ALTER TABLE checkpoint_messages DROP CONSTRAINT checkpoint_messages_goal_uid_fkey;
ALTER TABLE checkpoint_messages DROP CONSTRAINT checkpoint_messages_pkey;
ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_pkey;
ALTER TABLE checkpoints ADD COLUMN namespace text NOT NULL DEFAULT '';
ALTER TABLE checkpoint_messages ADD COLUMN namespace text NOT NULL DEFAULT '';
ALTER TABLE lesson_usage ADD COLUMN namespace text NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN namespace text NOT NULL DEFAULT '';
ALTER TABLE patterns ADD COLUMN namespace text NOT NULL DEFAULT '';

CREATE TEMPORARY TABLE goal_namespaces ON COMMIT DROP AS
    SELECT DISTINCT ON (goal_uid) goal_uid, namespace FROM experiences ORDER BY goal_uid, created_at DESC;
UPDATE checkpoints t SET namespace = g.namespace FROM goal_namespaces g WHERE g.goal_uid = t.goal_uid;
UPDATE checkpoint_messages t SET namespace = g.namespace FROM goal_namespaces g WHERE g.goal_uid = t.goal_uid;
UPDATE lesson_usage t SET namespace = g.namespace FROM goal_namespaces g WHERE g.goal_uid = t.goal_uid;
UPDATE decisions t SET namespace = g.namespace FROM goal_namespaces g WHERE g.goal_uid = t.goal_uid;
UPDATE patterns p SET namespace = s.namespace
FROM (SELECT kind, agent, key, min(namespace) AS namespace
      FROM (SELECT 'success' AS kind, agent, approach AS key, namespace FROM experiences WHERE approach IS NOT NULL
            UNION ALL
            SELECT 'error', agent, error_key, namespace FROM experiences WHERE error_key IS NOT NULL) e
      GROUP BY kind, agent, key HAVING count(DISTINCT namespace) = 1) s
WHERE p.kind = s.kind AND p.agent = s.agent AND p.key = s.key;

ALTER TABLE checkpoints ALTER COLUMN namespace DROP DEFAULT, ADD PRIMARY KEY (namespace, goal_uid);
ALTER TABLE checkpoint_messages ALTER COLUMN namespace DROP DEFAULT, ADD PRIMARY KEY (namespace, goal_uid, seq),
    ADD FOREIGN KEY (namespace, goal_uid) REFERENCES checkpoints (namespace, goal_uid) ON DELETE CASCADE;
ALTER TABLE lesson_usage DROP CONSTRAINT lesson_usage_pkey, ALTER COLUMN namespace DROP DEFAULT,
    ADD PRIMARY KEY (namespace, write_id, pattern_id);
ALTER TABLE decisions DROP CONSTRAINT decisions_goal_uid_approval_id_key, ALTER COLUMN namespace DROP DEFAULT,
    ADD UNIQUE (namespace, goal_uid, approval_id);
ALTER TABLE patterns DROP CONSTRAINT patterns_kind_agent_key_key, ALTER COLUMN namespace DROP DEFAULT,
    ADD UNIQUE (namespace, kind, agent, key);
-- A namespace's recent experiences (lessons, term frequencies) without reading the others'.
CREATE INDEX experiences_namespace_created ON experiences (namespace, created_at);

CREATE OR REPLACE FUNCTION overseer_learn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO patterns AS p (namespace, kind, agent, key, task, detail, outcome, success_count, failure_count,
                               first_seen, last_seen)
    SELECT namespace, 'success', agent, approach,
           (array_agg(description ORDER BY success DESC, created_at DESC))[1],
           (array_agg(overseer_steps(actions) ORDER BY success DESC, created_at DESC))[1],
           (array_agg(outcome ORDER BY created_at DESC) FILTER (WHERE success))[1],
           count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success),
           min(created_at), max(created_at)
    FROM new_experiences
    WHERE approach IS NOT NULL
    GROUP BY namespace, agent, approach
    ON CONFLICT (namespace, kind, agent, key) DO UPDATE SET
        task = CASE WHEN EXCLUDED.success_count > 0 OR p.success_count = 0 THEN EXCLUDED.task ELSE p.task END,
        detail = CASE WHEN EXCLUDED.success_count > 0 OR p.success_count = 0 THEN EXCLUDED.detail ELSE p.detail END,
        outcome = coalesce(EXCLUDED.outcome, p.outcome),
        success_count = p.success_count + EXCLUDED.success_count,
        failure_count = p.failure_count + EXCLUDED.failure_count,
        last_seen = greatest(p.last_seen, EXCLUDED.last_seen);

    INSERT INTO patterns AS p (namespace, kind, agent, key, task, detail, outcome, success_count, failure_count,
                               first_seen, last_seen)
    SELECT namespace, 'error', agent, error_key,
           (array_agg(description ORDER BY created_at DESC))[1],
           (array_agg(left(error, 300) ORDER BY created_at DESC))[1],
           (array_agg(outcome ORDER BY created_at DESC) FILTER (WHERE success))[1],
           count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success),
           min(created_at), max(created_at)
    FROM new_experiences
    WHERE error_key IS NOT NULL
    GROUP BY namespace, agent, error_key
    ON CONFLICT (namespace, kind, agent, key) DO UPDATE SET
        task = EXCLUDED.task,
        detail = EXCLUDED.detail,
        outcome = coalesce(EXCLUDED.outcome, p.outcome),
        success_count = p.success_count + EXCLUDED.success_count,
        failure_count = p.failure_count + EXCLUDED.failure_count,
        last_seen = greatest(p.last_seen, EXCLUDED.last_seen);
    RETURN NULL;
END
$$;

-- The policies. Not forced: the owner (the admin role that migrates and provisions) sees all.
ALTER TABLE checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE checkpoint_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE experiences ENABLE ROW LEVEL SECURITY;
ALTER TABLE patterns ENABLE ROW LEVEL SECURITY;
ALTER TABLE lesson_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE decisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_shares ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_tenants ENABLE ROW LEVEL SECURITY;
-- (SELECT overseer_tenant()) is computed once per statement, not once per row.
CREATE POLICY own ON checkpoints USING (namespace = (SELECT overseer_tenant()));
CREATE POLICY own ON checkpoint_messages USING (namespace = (SELECT overseer_tenant()));
CREATE POLICY own ON experiences USING (namespace = (SELECT overseer_tenant()));
CREATE POLICY own ON patterns USING (namespace = (SELECT overseer_tenant()));
CREATE POLICY own ON lesson_usage USING (namespace = (SELECT overseer_tenant()));
CREATE POLICY own ON decisions USING (namespace = (SELECT overseer_tenant()));
-- Shared knowledge is read-only for its readers: SELECT policies only.
CREATE POLICY shared ON experiences FOR SELECT USING ((namespace, agent) IN (
    SELECT s.namespace, s.agent FROM knowledge_shares s WHERE s.reader IN ((SELECT overseer_tenant()), '*')));
CREATE POLICY shared ON patterns FOR SELECT USING ((namespace, agent) IN (
    SELECT s.namespace, s.agent FROM knowledge_shares s WHERE s.reader IN ((SELECT overseer_tenant()), '*')));
CREATE POLICY involved ON knowledge_shares FOR SELECT
    USING ((SELECT overseer_tenant()) IN (namespace, reader) OR reader = '*');

-- The agents' group role: the only one granted the tables. Its members are the tenants' logins.
DO $do$
DECLARE
    agents name := overseer_role_name('overseer_agents');
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = agents) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', agents);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), agents);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON checkpoints, checkpoint_messages, experiences, '
                   'patterns, lesson_usage, decisions TO %I', agents);
    EXECUTE format('GRANT SELECT ON knowledge_shares, schema_migrations TO %I', agents);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), agents);
END
$do$;

-- A namespace's login, created or given a new password (a SCRAM verifier, so no log holds the
-- password); returns the role. Run by the admin role.
CREATE FUNCTION overseer_provision_tenant(tenant_namespace text, password text, password_sha256 text)
RETURNS name
LANGUAGE plpgsql AS $$
DECLARE
    login name := overseer_role_name(tenant_namespace);
BEGIN
    IF tenant_namespace !~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' OR length(tenant_namespace) > 63 THEN
        RAISE EXCEPTION 'namespace %: not a Kubernetes namespace name', quote_literal(tenant_namespace);
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = login) THEN
        EXECUTE format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
                       'PASSWORD %L', login, password);
    ELSE
        EXECUTE format('CREATE ROLE %I WITH LOGIN PASSWORD %L', login, password);
    END IF;
    EXECUTE format('GRANT %I TO %I', overseer_role_name('overseer_agents'), login);
    INSERT INTO knowledge_tenants (namespace, role, password_sha256) VALUES (tenant_namespace, login, password_sha256)
    ON CONFLICT (namespace) DO UPDATE SET role = EXCLUDED.role, password_sha256 = EXCLUDED.password_sha256;
    RETURN login;
END
$$;
REVOKE ALL ON FUNCTION overseer_provision_tenant(text, text, text) FROM PUBLIC;
"""

_SCHEMA_V4 = r"""
-- migration 3's five-argument function; migration 2's four-argument one where 3 came after this edit
DROP FUNCTION IF EXISTS overseer_seed_experiences(integer, text, timestamptz, interval, text);
DROP FUNCTION IF EXISTS overseer_seed_experiences(integer, text, timestamptz, interval);
"""

# The lessons lookup, run by the owner for the caller's own namespace. Under row-level security
# PostgreSQL may not use the text-search index: `@@` (ts_match_vq) is not leakproof, so it must not
# see a row before the policy has admitted it, and a rare word's search walked a million rows of
# created_at order (1.5 s) where the index takes milliseconds. This function reads as the tables'
# owner (no policies) and applies them itself: the tenant comes from the login (overseer_tenant(),
# session_user), never from an argument, and the rows are the policies' own and shared ones for
# experiences and patterns. The arguments only choose what to look for and how many; a login that
# maps to no namespace gets nothing. search_path pinned with pg_temp last as for overseer_tenant();
# plan_cache_mode: each call planned with its terms and tenant, since which index pays off depends
# on how common the terms are and how big the namespace is.
_SCHEMA_V5 = r"""
DO $do$ BEGIN
EXECUTE format($f$
CREATE OR REPLACE FUNCTION overseer_lessons(terms tsquery, for_agent text, result_limit integer,
                                            candidate_limit integer)
RETURNS TABLE (id bigint, kind text, task text, detail text, outcome text, success_count bigint,
               failure_count bigint, usage_count integer, score double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = %I, pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $body$
#variable_conflict use_column
DECLARE
    tenant text := overseer_tenant();
BEGIN
    IF tenant IS NULL THEN
        RETURN;
    END IF;
    -- Lessons come from the most recent experiences that share terms with the new goal, grouped
    -- by the pattern each followed (its tool sequence, its error), plus patterns whose own text
    -- matches; the work is bounded by candidate_limit, whatever the size of the table. Common terms
    -- walk experiences_namespace_created backwards and stop after candidate_limit matches; rare
    -- ones take a bitmap scan of experiences_search.
    RETURN QUERY
    WITH shared AS (   -- the policy `shared`: agents of other namespaces that share with this one
        SELECT DISTINCT s.namespace, s.agent FROM knowledge_shares s
        WHERE s.reader IN (tenant, '*') AND s.namespace <> tenant
    ), hits AS (
        (SELECT e.namespace, e.agent, e.approach, e.error_key, e.success, e.description, e.outcome, e.actions,
                e.error, e.search, e.created_at
         FROM experiences e
         WHERE e.namespace = tenant AND e.search @@ terms
         ORDER BY e.created_at DESC
         LIMIT candidate_limit)
        UNION ALL
        (SELECT h.* FROM shared CROSS JOIN LATERAL (
             SELECT e.namespace, e.agent, e.approach, e.error_key, e.success, e.description, e.outcome,
                    e.actions, e.error, e.search, e.created_at
             FROM experiences e
             WHERE e.namespace = shared.namespace AND e.agent = shared.agent AND e.search @@ terms
             ORDER BY e.created_at DESC
             LIMIT candidate_limit) h)
        ORDER BY created_at DESC
        LIMIT candidate_limit
    ), ranked AS (
        SELECT h.*, ts_rank(h.search, terms) / (1.0 + extract(epoch FROM now() - h.created_at) / 2592000.0)
                    AS relevance
        FROM hits h
    ), found AS (
        SELECT 0 AS source, 'success' AS kind, namespace, agent, approach AS key, sum(relevance) AS relevance,
               count(*) FILTER (WHERE success) AS succeeded, count(*) AS seen,
               (array_agg(description ORDER BY success DESC, relevance DESC))[1] AS task,
               overseer_steps((array_agg(actions ORDER BY success DESC, relevance DESC))[1]) AS detail,
               (array_agg(outcome ORDER BY relevance DESC) FILTER (WHERE success))[1] AS outcome
        FROM ranked WHERE approach IS NOT NULL GROUP BY namespace, agent, approach
        UNION ALL
        SELECT 0, 'error', namespace, agent, error_key, sum(relevance), count(*) FILTER (WHERE success),
               count(*), (array_agg(description ORDER BY relevance DESC))[1],
               (array_agg(left(error, 300) ORDER BY relevance DESC))[1],
               (array_agg(outcome ORDER BY relevance DESC) FILTER (WHERE success))[1]
        FROM ranked WHERE error_key IS NOT NULL GROUP BY namespace, agent, error_key
        UNION ALL
        SELECT 1, kind, namespace, agent, key, relevance, success_count, success_count + failure_count, task,
               detail, outcome
        FROM (SELECT p.*, ts_rank(p.search, terms) / (1.0 + extract(epoch FROM now() - p.last_seen) / 2592000.0)
                          AS relevance
              FROM patterns p
              WHERE p.search @@ terms
                AND (p.namespace = tenant OR (p.namespace, p.agent) IN (SELECT namespace, agent FROM shared))
              ORDER BY p.last_seen DESC LIMIT 20) own_text
    ), merged AS (
        -- a pattern found both ways keeps the counts among the similar goals
        SELECT kind, namespace, agent, key, sum(relevance) AS relevance,
               (array_agg(succeeded ORDER BY source))[1] AS succeeded, (array_agg(seen ORDER BY source))[1] AS seen,
               (array_agg(task ORDER BY source))[1] AS task, (array_agg(detail ORDER BY source))[1] AS detail,
               (array_agg(outcome ORDER BY source))[1] AS outcome
        FROM found GROUP BY kind, namespace, agent, key
    )
    SELECT p.id, m.kind, m.task, m.detail, m.outcome, m.succeeded::bigint, (m.seen - m.succeeded)::bigint,
           p.usage_count,
           (m.relevance
            * CASE WHEN m.kind = 'success'
                   THEN (m.succeeded + p.usage_success_count + 1.0) / (m.seen + p.usage_count + 2.0)
                   ELSE 0.5 + 0.5 * m.succeeded / greatest(m.seen, 1.0) END
            * CASE WHEN m.namespace = tenant AND m.agent = for_agent THEN 1.0 ELSE 0.5 END)::float8
    FROM merged m JOIN patterns p ON p.namespace = m.namespace AND p.kind = m.kind AND p.agent = m.agent
                                 AND p.key = m.key
    ORDER BY 9 DESC, p.id
    LIMIT result_limit;
END
$body$
$f$, current_schema());
EXECUTE format('REVOKE ALL ON FUNCTION overseer_lessons(tsquery, text, integer, integer) FROM PUBLIC');
EXECUTE format('GRANT EXECUTE ON FUNCTION overseer_lessons(tsquery, text, integer, integer) TO %I',
               overseer_role_name('overseer_agents'));
END $do$;
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "checkpoints, experiences, patterns, lessons, decisions", _SCHEMA_V1),
    (2, "benchmark seed function (now in the benchmarks)", _SCHEMA_V2),
    (3, "tenants: a namespace per row, a login per namespace, row-level security", _SCHEMA_V3),
    (4, "no benchmark seed function in the product's schema", _SCHEMA_V4),
    (5, "lessons looked up by the owner for the caller's own namespace (the text-search index usable)", _SCHEMA_V5),
]
"""Versioned, append-only: a new one is added for each change. A released migration is edited
only to take out what a later one removes anyway (migration 2)."""


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Apply the migrations this database lacks, each in its own transaction, under an
    advisory lock so processes starting together do not race. Returns the versions applied.

    A schema already up to date is only read: a tenant's login (which may not change the
    schema, nor should hold the lock) gets that far, and fails here otherwise."""
    applied: list[int] = []
    if await _schema_current(conn):
        return applied
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        async with conn.transaction():
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())")
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql.encode())  # bytes: run as one simple query, many statements
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                   (version, name))
            applied.append(version)
            logger.info("knowledge base: applied migration %d (%s)", version, name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied


async def _schema_current(conn: psycopg.AsyncConnection[Any]) -> bool:
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return False
    cur = await conn.execute("SELECT version FROM schema_migrations")
    return {row[0] for row in await cur.fetchall()} >= {v for v, _, _ in MIGRATIONS}
