package server

import (
	"encoding/json"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/botstate/botstate/internal/wire"
)

// The OpenAPI 3.1 document is built from the operation list and the Go
// types of its requests and responses, so it cannot drift from what the
// server decodes; a test checks it against the routes the server serves.

var (
	openAPIOnce sync.Once
	openAPIDoc  []byte
)

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(OpenAPI())
}

// OpenAPI returns the API's OpenAPI 3.1 document.
func OpenAPI() []byte {
	openAPIOnce.Do(func() {
		b, err := json.MarshalIndent(buildOpenAPI(), "", "  ")
		if err != nil {
			panic(err) // a bug in the builder, caught by the tests
		}
		openAPIDoc = b
	})
	return openAPIDoc
}

type schemas struct {
	defs map[string]any
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
	byteType = reflect.TypeFor[[]byte]()
)

// schema returns the JSON Schema of t, adding named structs to defs.
func (s *schemas) schema(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == rawType:
		return map[string]any{"description": "any JSON value (an object, for data and patches)"}
	case t == byteType:
		return map[string]any{"type": "string", "contentEncoding": "base64"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return s.schema(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "minimum": 0}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": s.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": s.schema(t.Elem())}
	case reflect.Struct:
		name := t.Name()
		if t.PkgPath() != "" && !strings.HasSuffix(t.PkgPath(), "/wire") {
			name = strings.ToUpper(t.PkgPath()[strings.LastIndex(t.PkgPath(), "/")+1:][:1]) +
				t.PkgPath()[strings.LastIndex(t.PkgPath(), "/")+2:] + name
		}
		if _, done := s.defs[name]; !done {
			s.defs[name] = nil // reserve: recursive types end here
			props := map[string]any{}
			var required []string
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				if !f.IsExported() {
					continue
				}
				tag := f.Tag.Get("json")
				if tag == "-" {
					continue
				}
				fname, opts, _ := strings.Cut(tag, ",")
				if fname == "" {
					fname = f.Name
				}
				props[fname] = s.schema(f.Type)
				if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") && f.Type.Kind() != reflect.Pointer {
					required = append(required, fname)
				}
			}
			sc := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
			if len(required) > 0 {
				sort.Strings(required)
				sc["required"] = required
			}
			s.defs[name] = sc
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

func operationID(name string) string {
	var b strings.Builder
	up := false
	for _, r := range name {
		switch {
		case r == '/' || r == '-':
			up = true
		case up:
			b.WriteString(strings.ToUpper(string(r)))
			up = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func problemResponses() map[string]any {
	p := map[string]any{"description": "An RFC 9457 problem document.",
		"content": map[string]any{"application/problem+json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Problem"}}}}
	out := map[string]any{}
	for _, code := range []string{"400", "401", "403", "404", "409", "413", "429", "503"} {
		out[code] = p
	}
	return out
}

func buildOpenAPI() map[string]any {
	sc := &schemas{defs: map[string]any{}}
	sc.schema(reflect.TypeFor[wire.Problem]())
	paths := map[string]any{}
	nsParam := []any{map[string]any{"name": "ns", "in": "path", "required": true,
		"description": "The namespace: 1 to 64 of letters, digits, '.', '_' and '-'.", "schema": map[string]any{"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}}}
	for _, op := range wire.Ops {
		o := map[string]any{"operationId": operationID(op.Name), "summary": op.Summary, "tags": []string{op.Name[:strings.Index(op.Name, "/")]}}
		responses := problemResponses()
		switch op.Name {
		case "snapshot/export":
			o["requestBody"] = map[string]any{"required": false, "content": map[string]any{"application/json": map[string]any{"schema": sc.schema(op.Req)}}}
			responses["200"] = map[string]any{"description": "A snapshot: a header line, then one JSON record per line.",
				"content": map[string]any{"application/x-ndjson": map[string]any{"schema": map[string]any{"type": "string"}}}}
		case "snapshot/import":
			o["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/x-ndjson": map[string]any{"schema": map[string]any{"type": "string"}}}}
			responses["200"] = map[string]any{"description": "How many records were imported.",
				"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object",
					"properties": map[string]any{"imported": map[string]any{"type": "integer"}}}}}}
		default:
			o["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": sc.schema(op.Req)}}}
			responses["200"] = map[string]any{"description": "Done.", "content": map[string]any{"application/json": map[string]any{"schema": sc.schema(op.Resp)}}}
		}
		o["responses"] = responses
		o["parameters"] = nsParam
		paths["/v1/ns/{ns}/"+op.Name] = map[string]any{"post": o}
	}
	for _, name := range []string{"export", "import"} {
		p := paths["/v1/ns/{ns}/snapshot/"+name].(map[string]any)["post"].(map[string]any)
		all := map[string]any{}
		for k, v := range p {
			all[k] = v
		}
		delete(all, "parameters")
		all["operationId"] = operationID("snapshot/" + name + "-all")
		all["summary"] = strings.Replace(p["summary"].(string), "the namespace", "every namespace", 1) + " Admin tokens only."
		paths["/v1/snapshot/"+name] = map[string]any{"post": all}
	}
	text := func(desc string) map[string]any {
		return map[string]any{"get": map[string]any{"operationId": operationID(strings.Trim(desc, "/")), "security": []any{},
			"responses": map[string]any{"200": map[string]any{"description": "ok", "content": map[string]any{"text/plain": map[string]any{"schema": map[string]any{"type": "string"}}}}}}}
	}
	paths["/healthz"] = text("/healthz")
	paths["/readyz"] = text("/readyz")
	paths["/metrics"] = text("/metrics")
	paths["/v1/openapi.json"] = map[string]any{"get": map[string]any{"operationId": "openapi", "security": []any{},
		"responses": map[string]any{"200": map[string]any{"description": "This document.", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}}}}}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "botstate", "version": "1",
			"description": "The state layer for chat bots, over HTTP: one POST per operation. Times are RFC 3339; a request's now " +
				"(omitted: the server's clock) is when its expiries and leases are decided; a zero or omitted expiry means never. " +
				"Binary values are base64. Errors are RFC 9457 problem documents with a stable code."},
		"servers":    []any{map[string]any{"url": "http://127.0.0.1:8080"}},
		"security":   []any{map[string]any{"bearer": []any{}}},
		"paths":      paths,
		"components": map[string]any{"schemas": sc.defs, "securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}}},
	}
}
