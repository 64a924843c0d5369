-- The PostgreSQL peer of budgetd's append (docs/performance.md, "The PostgreSQL peer").
--
-- budgetd's two appends of the load generator, allocation.propose and avrop.request, as one
-- PL/pgSQL call each, with the checks budgetd makes before it appends the event:
--   the id is 1-64 of A-Za-z0-9._:- and unused by anything (a retry with the same content
--   returns the first seq; other content is a conflict); 0 < amount <= 10^15; texts within
--   their limits; what the write names exists, under a row lock; the receiving unit is
--   registered and open; the fiscal year is not closed; an avrop's allocation is approved and
--   the avrop is entered by its last day (Europe/Stockholm); and the money fits: approved +
--   pending allocations never exceed the frame, called off + pending + being reduced never
--   exceed the allocation. Then the reservation is updated, the new entity and its id are
--   inserted, and the event is appended, in the one transaction the call runs in.
--
-- What budgetd does and this does not: hash each event into a chain (which would make every
-- append wait for one row, as a single writer does); keep seq gapless (an identity column
-- leaves gaps on rollback). Both would only slow PostgreSQL down: these figures are its
-- best case for the same checks.
--
-- Errors are raised with a SQLSTATE of class BD and budgetd's error code first in the message.
-- Amounts are bigint öre. Run on an empty database: psql -v ON_ERROR_STOP=1 -f pg_ledger.sql.

CREATE TABLE units (
    code   text    PRIMARY KEY,
    name   text    NOT NULL,
    closed boolean NOT NULL DEFAULT false
);

-- A closed fiscal year freezes its frames.
CREATE TABLE year_closings (
    year integer PRIMARY KEY,
    seq  bigint  NOT NULL
);

-- The log: every write appends one row, never updated.
CREATE TABLE events (
    seq   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts    timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor text        NOT NULL,
    type  text        NOT NULL,
    data  jsonb       NOT NULL
);

-- One namespace for the ids of everything a write creates (budgetd's id table).
CREATE TABLE ids (
    id   text   PRIMARY KEY,
    kind text   NOT NULL,
    seq  bigint NOT NULL
);

CREATE TABLE frames (
    id             text    PRIMARY KEY,
    unit           text    NOT NULL,
    year           integer NOT NULL,
    granted        bigint  NOT NULL CHECK (granted > 0),
    allocated      bigint  NOT NULL DEFAULT 0,
    pending        bigint  NOT NULL DEFAULT 0,
    avrop_last_day date,
    CONSTRAINT frame_fits CHECK (allocated >= 0 AND pending >= 0 AND allocated + pending <= granted)
);

CREATE TABLE allocations (
    id             text   PRIMARY KEY,
    frame          text   NOT NULL,
    unit           text   NOT NULL,
    amount         bigint NOT NULL CHECK (amount > 0),
    purpose        text   NOT NULL,
    status         text   NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'withdrawn')),
    proposer       text   NOT NULL,
    called_off     bigint NOT NULL DEFAULT 0,
    pending        bigint NOT NULL DEFAULT 0,
    reducing       bigint NOT NULL DEFAULT 0,
    avrop_last_day date,
    CONSTRAINT allocation_fits
        CHECK (called_off >= 0 AND pending >= 0 AND called_off + pending + reducing <= amount)
);

CREATE TABLE avrop (
    id         text   PRIMARY KEY,
    allocation text   NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    note       text   NOT NULL,
    status     text   NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'withdrawn')),
    requester  text   NOT NULL
);

-- Raises budgetd's error `code` (bad_request, not_found, conflict, ...) with `message`.
CREATE FUNCTION budget_fail(code text, message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%: %', code, message USING ERRCODE = CASE code
        WHEN 'bad_request' THEN 'BD400'
        WHEN 'not_found' THEN 'BD404'
        WHEN 'conflict' THEN 'BD409'
        WHEN 'insufficient_funds' THEN 'BD402'
        WHEN 'invalid_state' THEN 'BD422'
        ELSE 'BD500' END;
END $$;

-- The checks of every write that need no state: the id, the amount, a text.
CREATE FUNCTION budget_check_args(p_id text, p_amount bigint, p_text text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_id IS NULL OR p_id !~ '^[A-Za-z0-9._:-]{1,64}$' THEN
        PERFORM budget_fail('bad_request', 'id must be 1-64 of A-Za-z0-9._:-');
    END IF;
    IF p_amount IS NULL OR p_amount <= 0 OR p_amount > 1000000000000000 THEN
        PERFORM budget_fail('bad_request', format('amount %s is not in 1..10^15 öre', p_amount));
    END IF;
    IF p_text IS NULL OR octet_length(p_text) > 256 THEN
        PERFORM budget_fail('bad_request', 'a text is missing or longer than 256 bytes');
    END IF;
END $$;

-- A write whose id is taken: the first seq when it is a retry with the same content, else a
-- conflict. NULL when the id is free.
CREATE FUNCTION budget_retry(p_id text, p_type text, p_data jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    prior_seq bigint;
BEGIN
    SELECT i.seq INTO prior_seq FROM ids i WHERE i.id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM events e
                WHERE e.seq = prior_seq AND e.type = p_type AND e.data = p_data) THEN
        RETURN prior_seq;
    END IF;
    PERFORM budget_fail('conflict', format('id %s is taken by another write', p_id));
    RETURN NULL;
END $$;

CREATE FUNCTION budget_check_year_open(p_year integer, p_what text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM year_closings WHERE year = p_year) THEN
        PERFORM budget_fail('invalid_state', format('fiscal year %s is closed; %s', p_year, p_what));
    END IF;
END $$;

-- allocation.propose: `p_amount` of frame `p_frame` to unit `p_unit`, pending a decision.
-- Returns the event's seq.
CREATE FUNCTION budget_propose(p_id text, p_frame text, p_unit text, p_amount bigint,
                               p_purpose text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    f     frames%ROWTYPE;
    data  jsonb;
    s     bigint;
BEGIN
    PERFORM budget_check_args(p_id, p_amount, p_purpose);
    data := jsonb_build_object('id', p_id, 'frame', p_frame, 'unit', p_unit,
                               'amount', p_amount, 'purpose', p_purpose);
    s := budget_retry(p_id, 'allocation.proposed', data);
    IF s IS NOT NULL THEN
        RETURN s;
    END IF;
    SELECT * INTO f FROM frames WHERE id = p_frame FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM budget_fail('not_found', format('no frame %s', p_frame));
    END IF;
    PERFORM budget_check_year_open(f.year, format('nothing can be allocated from frame %s', p_frame));
    IF NOT EXISTS (SELECT 1 FROM units WHERE code = p_unit AND NOT closed) THEN
        PERFORM budget_fail('not_found', format('no open unit %s', p_unit));
    END IF;
    IF p_amount > f.granted - (f.allocated + f.pending) THEN
        PERFORM budget_fail('insufficient_funds',
            format('allocation %s of %s öre does not fit frame %s: %s of %s öre approved or pending',
                   p_id, p_amount, p_frame, f.allocated + f.pending, f.granted));
    END IF;
    UPDATE frames SET pending = pending + p_amount WHERE id = p_frame;
    INSERT INTO events (actor, type, data) VALUES (session_user, 'allocation.proposed', data)
        RETURNING seq INTO s;
    INSERT INTO ids (id, kind, seq) VALUES (p_id, 'allocation', s);
    INSERT INTO allocations (id, frame, unit, amount, purpose, status, proposer)
        VALUES (p_id, p_frame, p_unit, p_amount, p_purpose, 'pending', session_user);
    RETURN s;
END $$;

-- avrop.request: `p_amount` of approved allocation `p_allocation`, pending a decision.
-- Returns the event's seq.
CREATE FUNCTION budget_avrop(p_id text, p_allocation text, p_amount bigint, p_note text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    a     allocations%ROWTYPE;
    f     frames%ROWTYPE;
    last  date;
    data  jsonb;
    s     bigint;
BEGIN
    PERFORM budget_check_args(p_id, p_amount, p_note);
    data := jsonb_build_object('id', p_id, 'allocation', p_allocation, 'amount', p_amount,
                               'note', p_note);
    s := budget_retry(p_id, 'avrop.requested', data);
    IF s IS NOT NULL THEN
        RETURN s;
    END IF;
    SELECT * INTO a FROM allocations WHERE id = p_allocation FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM budget_fail('not_found', format('no allocation %s', p_allocation));
    END IF;
    SELECT * INTO f FROM frames WHERE id = a.frame;
    PERFORM budget_check_year_open(f.year,
        format('allocation %s cannot be called off', p_allocation));
    IF a.status <> 'approved' THEN
        PERFORM budget_fail('invalid_state',
            format('allocation %s is %s; an avrop needs an approved allocation',
                   p_allocation, a.status));
    END IF;
    last := coalesce(a.avrop_last_day, f.avrop_last_day);
    IF last IS NOT NULL AND (now() AT TIME ZONE 'Europe/Stockholm')::date > last THEN
        PERFORM budget_fail('invalid_state',
            format('the last day for avrop on allocation %s was %s', p_allocation, last));
    END IF;
    IF p_amount > a.amount - (a.called_off + a.pending + a.reducing) THEN
        PERFORM budget_fail('insufficient_funds',
            format('avrop %s of %s öre does not fit allocation %s: %s of %s öre called off or pending',
                   p_id, p_amount, p_allocation, a.called_off + a.pending + a.reducing, a.amount));
    END IF;
    UPDATE allocations SET pending = pending + p_amount WHERE id = p_allocation;
    INSERT INTO events (actor, type, data) VALUES (session_user, 'avrop.requested', data)
        RETURNING seq INTO s;
    INSERT INTO ids (id, kind, seq) VALUES (p_id, 'avrop', s);
    INSERT INTO avrop (id, allocation, amount, note, status, requester)
        VALUES (p_id, p_allocation, p_amount, p_note, 'pending', session_user);
    RETURN s;
END $$;

-- What the load generator's appends name, made directly (not measured): units KS and SON,
-- `frame_count` frames "pg<tag>-f<i>" of 10^15 öre of KS for `year`, and `allocation_count`
-- approved allocations "pg<tag>-a<i>" of 10^12 öre to SON, spread over the frames, each with
-- its events. Returns the number of events written.
CREATE FUNCTION budget_bench_setup(tag text, year integer, frame_count integer,
                                   allocation_count integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    fid text;
    aid text;
    s bigint;
BEGIN
    INSERT INTO units (code, name) VALUES ('KS', 'Kommunstyrelsen'),
                                          ('SON', 'Social- och omsorgsnämnden')
        ON CONFLICT (code) DO NOTHING;
    FOR i IN 0 .. frame_count - 1 LOOP
        fid := format('pg%s-f%s', tag, i);
        INSERT INTO events (actor, type, data) VALUES (session_user, 'frame.granted',
            jsonb_build_object('id', fid, 'unit', 'KS', 'year', year,
                               'amount', 1000000000000000, 'title', 'Lastprov'))
            RETURNING seq INTO s;
        INSERT INTO ids VALUES (fid, 'frame', s);
        INSERT INTO frames (id, unit, year, granted) VALUES (fid, 'KS', year, 1000000000000000);
        n := n + 1;
    END LOOP;
    FOR i IN 0 .. allocation_count - 1 LOOP
        aid := format('pg%s-a%s', tag, i);
        fid := format('pg%s-f%s', tag, i % frame_count);
        INSERT INTO events (actor, type, data) VALUES (session_user, 'allocation.proposed',
            jsonb_build_object('id', aid, 'frame', fid, 'unit', 'SON',
                               'amount', 1000000000000, 'purpose', 'Lastprov'))
            RETURNING seq INTO s;
        INSERT INTO ids VALUES (aid, 'allocation', s);
        INSERT INTO events (actor, type, data) VALUES ('bench-decider', 'decision.approved',
            jsonb_build_object('id', aid || '-ok', 'target', aid))
            RETURNING seq INTO s;
        INSERT INTO ids VALUES (aid || '-ok', 'decision', s);
        INSERT INTO allocations (id, frame, unit, amount, purpose, status, proposer)
            VALUES (aid, fid, 'SON', 1000000000000, 'Lastprov', 'approved', session_user);
        UPDATE frames SET allocated = allocated + 1000000000000 WHERE id = fid;
        n := n + 2;
    END LOOP;
    RETURN n;
END $$;
