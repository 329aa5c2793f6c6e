-- A text dump of everything the beema_hooks extension defines in the current database, for
-- scripts/upgrade_test.sh to diff an upgraded database against a fresh install. Oids never
-- appear: objects are named (regclass/regprocedure/pg_describe_object with search_path =
-- pg_catalog, so names are schema-qualified), ACLs are expanded, defaults filled in
-- (acldefault) and sorted. One line per fact, sorted; functions and views print their whole
-- definition under a header line. Run with: psql -X -q -At -v ON_ERROR_STOP=1 -f THIS_FILE
-- It only reads, apart from temporary tables of its own session.
\set ON_ERROR_STOP 1
\pset format unaligned
\pset tuples_only on
SET search_path = pg_catalog;
SET client_min_messages = warning;

-- The extension's member objects (pg_depend deptype 'e').
CREATE TEMP TABLE _members AS
SELECT d.classid, d.objid, d.objsubid
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'beema_hooks';

-- Schemas: `hooks` and any member schema.
CREATE TEMP TABLE _nsp AS
SELECT n.oid FROM pg_namespace n
 WHERE n.nspname = 'hooks'
    OR (n.oid) IN (SELECT objid FROM _members WHERE classid = 'pg_namespace'::regclass);

-- Relations (tables, views, sequences, composite types...) in those schemas or members.
CREATE TEMP TABLE _rel AS
SELECT c.oid FROM pg_class c
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
   AND (c.relnamespace IN (SELECT oid FROM _nsp)
        OR c.oid IN (SELECT objid FROM _members WHERE classid = 'pg_class'::regclass));

-- Functions and procedures.
CREATE TEMP TABLE _proc AS
SELECT p.oid FROM pg_proc p
 WHERE p.pronamespace IN (SELECT oid FROM _nsp)
    OR p.oid IN (SELECT objid FROM _members WHERE classid = 'pg_proc'::regclass);

-- Types declared on their own (not the row type of a table, not an array type).
CREATE TEMP TABLE _type AS
SELECT t.oid FROM pg_type t
 WHERE (t.typnamespace IN (SELECT oid FROM _nsp)
        OR t.oid IN (SELECT objid FROM _members WHERE classid = 'pg_type'::regclass))
   AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
   AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid);

-- Every object of ours, for comments and initial privileges.
CREATE TEMP TABLE _obj AS
          SELECT 'pg_extension'::regclass::oid AS classid, oid AS objid FROM pg_extension WHERE extname = 'beema_hooks'
UNION     SELECT classid, objid FROM _members
UNION     SELECT 'pg_namespace'::regclass::oid, oid FROM _nsp
UNION     SELECT 'pg_class'::regclass::oid, oid FROM _rel
UNION     SELECT 'pg_class'::regclass::oid, indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM _rel)
UNION     SELECT 'pg_proc'::regclass::oid, oid FROM _proc
UNION     SELECT 'pg_type'::regclass::oid, oid FROM _type
UNION     SELECT 'pg_constraint'::regclass::oid, oid FROM pg_constraint
           WHERE conrelid IN (SELECT oid FROM _rel) OR contypid IN (SELECT oid FROM _type)
UNION     SELECT 'pg_trigger'::regclass::oid, oid FROM pg_trigger
           WHERE tgrelid IN (SELECT oid FROM _rel) AND NOT tgisinternal
UNION     SELECT 'pg_policy'::regclass::oid, oid FROM pg_policy WHERE polrelid IN (SELECT oid FROM _rel)
UNION     SELECT 'pg_rewrite'::regclass::oid, oid FROM pg_rewrite
           WHERE ev_class IN (SELECT oid FROM _rel) AND rulename <> '_RETURN';

-- The roles our objects grant to or name in policies (the extension's own roles).
CREATE TEMP TABLE _role AS
SELECT DISTINCT a.grantee AS oid
  FROM (SELECT relacl AS acl FROM pg_class WHERE oid IN (SELECT oid FROM _rel)
        UNION ALL SELECT proacl FROM pg_proc WHERE oid IN (SELECT oid FROM _proc)
        UNION ALL SELECT nspacl FROM pg_namespace WHERE oid IN (SELECT oid FROM _nsp)
        UNION ALL SELECT typacl FROM pg_type WHERE oid IN (SELECT oid FROM _type)
        UNION ALL SELECT attacl FROM pg_attribute WHERE attrelid IN (SELECT oid FROM _rel)
        UNION ALL SELECT defaclacl FROM pg_default_acl WHERE defaclnamespace IN (SELECT oid FROM _nsp)
       ) x, aclexplode(x.acl) a
 WHERE x.acl IS NOT NULL AND a.grantee <> 0
UNION
SELECT unnest(polroles) FROM pg_policy WHERE polrelid IN (SELECT oid FROM _rel)
EXCEPT
SELECT 0;

-- An ACL as sorted text, NULL (the default) replaced by what it means.
CREATE FUNCTION pg_temp.acl(acl aclitem[], kind "char", owner oid) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(string_agg(item, ' ' ORDER BY item), '(none)')
      FROM (SELECT format('%s=%s%s/%s',
                          CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                          a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END,
                          pg_get_userbyid(a.grantor)) AS item
              FROM aclexplode(coalesce(acl, acldefault(kind, owner))) AS a) AS items
$$;

CREATE TEMP TABLE _out (section text, ident text, detail text);

-- extension
INSERT INTO _out
SELECT 'extension', e.extname,
       format('version=%s relocatable=%s schema=%s owner=%s config=%s conditions=%s',
              e.extversion, e.extrelocatable, e.extnamespace::regnamespace, pg_get_userbyid(e.extowner),
              coalesce((SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text)
                          FROM unnest(e.extconfig) c), '-'),
              coalesce(array_to_string(e.extcondition, ','), '-'))
  FROM pg_extension e WHERE e.extname = 'beema_hooks';

-- member objects
INSERT INTO _out
SELECT 'member', pg_describe_object(classid, objid, objsubid), '' FROM _members;

-- schemas
INSERT INTO _out
SELECT 'schema', n.nspname,
       format('owner=%s acl=%s', pg_get_userbyid(n.nspowner), pg_temp.acl(n.nspacl, 'n', n.nspowner))
  FROM pg_namespace n WHERE n.oid IN (SELECT oid FROM _nsp);

-- relations
INSERT INTO _out
SELECT 'relation', c.oid::regclass::text,
       format('kind=%s persistence=%s owner=%s options=%s rowsecurity=%s forcerowsecurity=%s replident=%s am=%s acl=%s%s%s',
              c.relkind, c.relpersistence, pg_get_userbyid(c.relowner),
              coalesce((SELECT string_agg(o, ',' ORDER BY o) FROM unnest(c.reloptions) o), '-'),
              c.relrowsecurity, c.relforcerowsecurity, c.relreplident,
              coalesce((SELECT amname FROM pg_am WHERE oid = c.relam), '-'),
              pg_temp.acl(c.relacl, CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner),
              CASE WHEN c.relkind = 'p' THEN ' partkey=' || pg_get_partkeydef(c.oid) ELSE '' END,
              coalesce(' inherits=' || (SELECT string_agg(i.inhparent::regclass::text, ',' ORDER BY i.inhseqno)
                                          FROM pg_inherits i WHERE i.inhrelid = c.oid), ''))
  FROM pg_class c WHERE c.oid IN (SELECT oid FROM _rel);

-- column order (a column added by ALTER TABLE goes last; a fresh install may put it elsewhere)
INSERT INTO _out
SELECT 'column-order', c.oid::regclass::text,
       string_agg(a.attname, ', ' ORDER BY a.attnum)
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.oid IN (SELECT oid FROM _rel) AND c.relkind <> 'S'
 GROUP BY c.oid;

-- columns
INSERT INTO _out
SELECT 'column', format('%s.%I', c.oid::regclass, a.attname),
       concat_ws(' ',
                 format_type(a.atttypid, a.atttypmod),
                 CASE WHEN a.attnotnull THEN 'NOT NULL' END,
                 CASE WHEN a.attgenerated = 's' THEN 'GENERATED ALWAYS AS ' || pg_get_expr(d.adbin, d.adrelid) || ' STORED'
                      WHEN d.adbin IS NOT NULL THEN 'DEFAULT ' || pg_get_expr(d.adbin, d.adrelid) END,
                 CASE a.attidentity WHEN 'a' THEN 'IDENTITY ALWAYS' WHEN 'd' THEN 'IDENTITY BY DEFAULT' END,
                 CASE WHEN a.attcollation <> t.typcollation
                      THEN 'COLLATE ' || (SELECT format('%I.%I', cn.nspname, co.collname)
                                            FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                                           WHERE co.oid = a.attcollation) END,
                 CASE WHEN a.attstorage <> t.typstorage THEN 'STORAGE ' || a.attstorage::text END,
                 CASE WHEN a.attcompression <> ''::"char" THEN 'COMPRESSION ' || a.attcompression::text END,
                 CASE WHEN a.attstattarget <> -1 THEN 'STATISTICS ' || a.attstattarget END,
                 -- (this machine's Postgres 15 shows pg_attver=<a number that differs per table> in
                 -- every column's attoptions: not an option anybody sets, left out)
                 'OPTIONS ' || (SELECT string_agg(o, ',' ORDER BY o) FROM unnest(a.attoptions) o
                                 WHERE o NOT LIKE 'pg\_attver=%'),
                 CASE WHEN a.attacl IS NOT NULL THEN 'ACL ' || pg_temp.acl(a.attacl, 'c', c.relowner) END)
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE c.oid IN (SELECT oid FROM _rel) AND c.relkind <> 'S';

-- constraints of tables and domains
INSERT INTO _out
SELECT 'constraint',
       format('%s.%I', coalesce(co.conrelid::regclass::text, co.contypid::regtype::text), co.conname),
       format('%s%s', pg_get_constraintdef(co.oid, true), CASE WHEN co.convalidated THEN '' ELSE ' (not validated)' END)
  FROM pg_constraint co
 WHERE co.conrelid IN (SELECT oid FROM _rel) OR co.contypid IN (SELECT oid FROM _type);

-- indexes
INSERT INTO _out
SELECT 'index', i.indexrelid::regclass::text,
       pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisclustered THEN ' (clustered)' ELSE '' END
         || CASE WHEN i.indisreplident THEN ' (replica identity)' ELSE '' END
         || CASE WHEN NOT i.indisvalid THEN ' (INVALID)' ELSE '' END
  FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM _rel);

-- triggers
INSERT INTO _out
SELECT 'trigger', format('%s.%I', t.tgrelid::regclass, t.tgname),
       pg_get_triggerdef(t.oid, true) || ' enabled=' || t.tgenabled::text
  FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM _rel) AND NOT t.tgisinternal;

-- rules other than views' own
INSERT INTO _out
SELECT 'rule', format('%s.%I', r.ev_class::regclass, r.rulename), pg_get_ruledef(r.oid, true)
  FROM pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM _rel) AND r.rulename <> '_RETURN';

-- row-level security policies
INSERT INTO _out
SELECT 'policy', format('%I.%I.%I', p.schemaname, p.tablename, p.policyname),
       format('%s for %s to %s using (%s) with check (%s)', p.permissive, p.cmd,
              array_to_string(p.roles, ','), coalesce(p.qual, '-'), coalesce(p.with_check, '-'))
  FROM pg_policies p
 WHERE format('%I.%I', p.schemaname, p.tablename)::regclass::oid IN (SELECT oid FROM _rel);

-- views (the definition under a header line)
INSERT INTO _out
SELECT 'view', c.oid::regclass::text, E'\n' || pg_get_viewdef(c.oid, true)
  FROM pg_class c WHERE c.oid IN (SELECT oid FROM _rel) AND c.relkind IN ('v', 'm');

-- sequences (definitions, not their current values)
INSERT INTO _out
SELECT 'sequence', s.seqrelid::regclass::text,
       format('type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
              s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
              coalesce((SELECT string_agg(pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid), ',')
                          FROM pg_depend d
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                           AND d.deptype IN ('a', 'i') AND d.refclassid = 'pg_class'::regclass), '-'))
  FROM pg_sequence s WHERE s.seqrelid IN (SELECT oid FROM _rel);

-- functions and procedures: attributes on one line, the definition under a header line
INSERT INTO _out
SELECT 'function-attrs', p.oid::regprocedure::text,
       format('kind=%s volatile=%s secdef=%s strict=%s leakproof=%s parallel=%s cost=%s rows=%s config=%s owner=%s acl=%s',
              p.prokind, p.provolatile, p.prosecdef, p.proisstrict, p.proleakproof, p.proparallel,
              p.procost, p.prorows, coalesce(array_to_string(p.proconfig, ','), '-'),
              pg_get_userbyid(p.proowner), pg_temp.acl(p.proacl, 'f', p.proowner))
  FROM pg_proc p WHERE p.oid IN (SELECT oid FROM _proc);
INSERT INTO _out
SELECT 'function', p.oid::regprocedure::text,
       E'\n' || CASE WHEN p.prokind = 'a' THEN '(aggregate)' ELSE pg_get_functiondef(p.oid) END
  FROM pg_proc p WHERE p.oid IN (SELECT oid FROM _proc);

-- types of their own (enums, domains, composite types, ranges...)
INSERT INTO _out
SELECT 'type', t.oid::regtype::text,
       format('typtype=%s owner=%s acl=%s%s%s', t.typtype, pg_get_userbyid(t.typowner),
              pg_temp.acl(t.typacl, 'T', t.typowner),
              CASE WHEN t.typtype = 'e' THEN ' labels=' || (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder)
                                                             FROM pg_enum WHERE enumtypid = t.oid) ELSE '' END,
              CASE WHEN t.typtype = 'd' THEN format(' base=%s notnull=%s default=%s', format_type(t.typbasetype, t.typtypmod),
                                                    t.typnotnull, coalesce(t.typdefault, '-')) ELSE '' END)
  FROM pg_type t WHERE t.oid IN (SELECT oid FROM _type);

-- default privileges in our schemas
INSERT INTO _out
SELECT 'default-acl', format('%s in %s for %s', d.defaclobjtype, d.defaclnamespace::regnamespace, pg_get_userbyid(d.defaclrole)),
       pg_temp.acl(d.defaclacl, 'r', d.defaclrole)
  FROM pg_default_acl d WHERE d.defaclnamespace IN (SELECT oid FROM _nsp);

-- the roles (cluster-wide) and memberships among them
INSERT INTO _out
SELECT 'role', r.rolname,
       format('super=%s inherit=%s createrole=%s createdb=%s login=%s replication=%s bypassrls=%s connlimit=%s config=%s',
              r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication,
              r.rolbypassrls, r.rolconnlimit, coalesce(array_to_string(r.rolconfig, ','), '-'))
  FROM pg_roles r WHERE r.oid IN (SELECT oid FROM _role);
INSERT INTO _out
SELECT 'role-membership', format('%s in %s', pg_get_userbyid(m.member), pg_get_userbyid(m.roleid)),
       format('admin_option=%s', m.admin_option)
  FROM pg_auth_members m WHERE m.member IN (SELECT oid FROM _role) AND m.roleid IN (SELECT oid FROM _role);

-- comments
INSERT INTO _out
SELECT 'comment', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
  FROM pg_description d JOIN _obj o ON o.classid = d.classoid AND o.objid = d.objoid;
INSERT INTO _out
SELECT 'comment', 'role ' || r.rolname, d.description
  FROM pg_shdescription d JOIN pg_roles r ON r.oid = d.objoid
 WHERE d.classoid = 'pg_authid'::regclass AND r.oid IN (SELECT oid FROM _role);

-- initial privileges (what pg_dump treats as the extension's own grants)
INSERT INTO _out
SELECT 'init-privs', pg_describe_object(i.classoid, i.objoid, i.objsubid),
       format('%s %s', i.privtype, pg_temp.acl(i.initprivs, NULL, NULL))
  FROM pg_init_privs i JOIN _obj o ON o.classid = i.classoid AND o.objid = i.objoid;

-- event triggers among the members
INSERT INTO _out
SELECT 'event-trigger', e.evtname,
       format('on=%s function=%s enabled=%s tags=%s', e.evtevent, e.evtfoid::regprocedure, e.evtenabled,
              coalesce(array_to_string(e.evttags, ','), '-'))
  FROM pg_event_trigger e
 WHERE e.oid IN (SELECT objid FROM _members WHERE classid = 'pg_event_trigger'::regclass);

SELECT CASE WHEN detail = '' THEN format('%s %s', section, ident) ELSE format('%s %s: %s', section, ident, detail) END
  FROM _out ORDER BY section, ident, detail;
