-- botstate schema, version 4: the size of data as a size limit counts it.
--
-- Runs like 0001, with search_path set to the store's schema, under the
-- migration advisory lock, in one transaction. It only adds a function.

-- data_size(doc) is driver.DataSize of the data doc holds: the length of
-- the compact, key-sorted JSON that Go writes for it (encoding/json without
-- HTML escaping), which is what every backend returns and what
-- WithMaxValueSize bounds. A merge by jsonb || checks its result with it
-- inside its one statement (mergeConvSQL and the docs' merge).
--
-- It is exact for data that survives jsonb (data_jsonb_exact: numbers
-- come back as written, no \u0000), the only data the statements give it.
-- jsonb's text differs from Go's in two ways only: a space after every
-- colon and after every comma between members or elements (2n - 1 in an
-- object of n members, n - 1 in an array of n elements), and U+2028 and
-- U+2029 written as themselves (3 bytes) where Go writes \u2028 (6). Both
-- write \" \\ \b \f \n \r \t and \u00XX for the other control characters,
-- and every other character as itself; key order changes no length.
-- strict $.** is doc itself and every value nested in it.
CREATE FUNCTION data_size(doc jsonb) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
BEGIN ATOMIC
    SELECT (octet_length(t)
            + (octet_length(t) - octet_length(translate(t, chr(8232) || chr(8233), '')))
            - (SELECT coalesce(sum(CASE jsonb_typeof(v)
                                   WHEN 'object' THEN greatest(2 * (SELECT count(*) FROM jsonb_object_keys(v)) - 1, 0)
                                   WHEN 'array' THEN greatest(jsonb_array_length(v) - 1, 0)
                                   ELSE 0 END), 0)
                 FROM jsonb_path_query(doc, 'strict $.**') AS v))::bigint
      FROM (SELECT doc::text AS t) AS s;
END;
