#!/usr/bin/env python3
"""Generates crates/apiserver/src/protobuf/table.rs: for every Kubernetes protobuf message, its
fields as (tag, JSON name, wire kind, nested message). Field tags and kinds come from the prost
attributes of the k8s-pb crate; JSON names (which are not derivable from prost's snake_case, e.g.
`hostIP`) come from the serde field names of the k8s-openapi crate (v1_33). Both crates must be in
the cargo registry (run `cargo fetch` first).

Usage: hack/gen-protobuf-table.py > crates/apiserver/src/protobuf/table.rs
"""
import glob, os, re, sys

reg = glob.glob(os.path.expanduser('~/.cargo/registry/src/*/'))[0]
pb_root = glob.glob(reg + 'k8s-pb-0.9.*/src')[0]
oa_root = glob.glob(reg + 'k8s-openapi-0.29.*/src/v1_33')[0]

# k8s-openapi: (module path, struct) -> {snake: json}
json_names = {}
for path in glob.glob(oa_root + '/**/*.rs', recursive=True):
    src = open(path).read()
    m = re.search(r'^pub struct (\w+)', src, re.M)
    if not m:
        continue
    mod = os.path.relpath(os.path.dirname(path), oa_root).replace('/', '::')
    names = {}
    for jm in re.finditer(r'"([^"]+)" => Field::Key_(\w+),', src):
        names[jm.group(2)] = jm.group(1)
    json_names[(mod, m.group(1))] = names

def camel(snake):
    parts = snake.split('_')
    return parts[0] + ''.join(p[:1].upper() + p[1:] for p in parts[1:])

camel_of = {}
field_marks = {}
struct_atomic = {}
messages = {}  # full name -> list of (tag, json, kind, type_full or None, repeated)
order = []
for path in sorted(glob.glob(pb_root + '/**/mod.rs', recursive=True)):
    mod = os.path.relpath(os.path.dirname(path), pb_root).replace('/', '::')
    if mod == '.':
        continue
    src = open(path).read()
    for sm in re.finditer(r'((?:[ \t]*///[^\n]*\n)*)(?:#\[[^\n]*\n)*pub struct (\w+) \{(?:\}|(.*?)\n\})', src, re.S):
        struct_doc, name, body = sm.group(1) or '', sm.group(2), sm.group(3) or ''
        struct_atomic[f'{mod}::{name}'] = '+structType=atomic' in struct_doc
        full = f'{mod}::{name}'
        fields = []
        for fm in re.finditer(r'((?:[ \t]*///[^\n]*\n)*)\s*#\[prost\(([^\]]*)\)\]\s*pub (?:r#)?(\w+):(.*?)(?=\n\s*(?:///|#\[|$))', body + '\n', re.S):
            doc, attr, field = fm.group(1) or '', fm.group(2), fm.group(3)
            marks = dict(re.findall(r'\+(patchStrategy|patchMergeKey|listType|mapType)=([\w,]+)', doc))
            list_keys = re.findall(r'\+listMapKey=(\w+)', doc)
            ty = re.sub(r'\s+', '', fm.group(4)).rstrip(',')
            tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
            repeated = 'repeated' in attr
            kind = attr.split(',')[0].strip()
            nested = None
            if kind.startswith('btree_map'):
                v = re.search(r'btree_map = "string, (\w+)"', attr).group(1)
                kind = 'map_' + v
                if v == 'message':
                    tm = re.search(r'BTreeMap<[^,]+,([\w:]+),?>', ty)
                    nested = tm.group(1)
            elif kind.startswith('bytes'):
                kind = 'bytes'
            elif kind == 'message':
                nested = ty
                for wrapper in ('::core::option::Option<', '::prost::alloc::vec::Vec<', '::prost::alloc::boxed::Box<'):
                    nested = nested.replace(wrapper, '')
                nested = nested.rstrip(',>').rstrip(',')
            if nested:
                # Resolve super:: paths relative to this module.
                segs = mod.split('::')
                parts = nested.split('::')
                while parts and parts[0] == 'super':
                    parts.pop(0)
                    segs = segs[:-1]
                if parts and parts[0] in ('', 'crate'):
                    parts.pop(0)
                    segs = []
                if len(parts) == 1:
                    nested = '::'.join(mod.split('::') + parts)
                else:
                    nested = '::'.join(segs + parts)
            known = json_names.get((mod, name))
            jn = (known or {}).get(field) or camel(field)
            if kind == 'message' and known is not None and field not in known and nested:
                # Go inlines some embedded structs in JSON (IngressRuleValue, VolumeSource,
                # ProbeHandler, ...); k8s-openapi flattens them into the parent. Resolved below.
                jn = '@inline'
            if name == 'JsonSchemaProps' and field in ('ref', 'schema'):
                jn = '$' + field
            fields.append((tag, jn, kind, nested, repeated))
            field_marks[(full, tag)] = (marks, list_keys)
            camel_of[(full, tag)] = camel(field)
        messages[full] = fields
        order.append(full)

# Keep what the served (GA) versions can reach: alpha/beta-only messages are never decoded.
served = [n for n in order if not re.search(r'::v\d+(alpha|beta)\d*::', n)]
keep, stack = set(), list(served)
while stack:
    n = stack.pop()
    if n in keep or n not in messages:
        continue
    keep.add(n)
    stack.extend(f[3] for f in messages[n] if f[3])
order = [n for n in order if n in keep]
index = {n: i for i, n in enumerate(order)}
kinds = {'string': 'Str', 'int32': 'Int', 'int64': 'Int', 'bool': 'Bool', 'double': 'Double', 'bytes': 'Bytes',
         'message': 'Msg', 'map_string': 'MapStr', 'map_message': 'MapMsg', 'map_bytes': 'MapBytes'}
out = []
out.append('//! Generated by `hack/gen-protobuf-table.py` from the k8s-pb (field tags and kinds) and')
out.append('//! k8s-openapi v1_33 (JSON names) crates. Do not edit by hand.')
out.append('')
out.append('use super::{Field, Kind::*, ListType, MapType, Message, Patch};')
out.append('')
out.append('/// Every message, by index; fields refer to nested messages by index.')
out.append('pub static MESSAGES: &[Message] = &[')
missing = set()
for full in order:
    fs = []
    for tag, jn, kind, nested, repeated in messages[full]:
        if jn == '@inline':
            parent = full.rsplit('::', 1)
            pmod, pname = parent[0], parent[1]
            parent_fields = set(json_names.get((pmod, pname), {}).values())
            child_fields = {f[1] for f in messages.get(nested, [])}
            # k8s-pb may be newer than v1_33 and carry a few fields k8s-openapi lacks.
            if child_fields and len(child_fields & parent_fields) >= 0.8 * len(child_fields):
                jn = ''
            else:
                jn = camel_of.get((full, tag), jn)
        n = index.get(nested) if nested else None
        if nested and n is None:
            missing.add(nested)
            continue
        k = kinds[kind]
        marks, keys = field_marks.get((full, tag), ({}, []))
        ps = marks.get('patchStrategy', '')
        patch = {'': 'None', 'merge': 'Merge', 'replace': 'Replace', 'retainKeys': 'RetainKeys', 'merge,retainKeys': 'MergeRetainKeys'}[ps]
        lt = {'': 'Unset', 'atomic': 'Atomic', 'set': 'Set', 'map': 'Map'}[marks.get('listType', '')]
        mt = {'': 'Unset', 'atomic': 'Atomic', 'granular': 'Granular'}[marks.get('mapType', '')]
        mk = marks.get('patchMergeKey', '')
        lk = ', '.join(f'"{x}"' for x in keys)
        fs.append(f'Field {{ tag: {tag}, json: "{jn}", kind: {k}, message: {n if n is not None else 0}, repeated: {"true" if repeated else "false"}, '
                  f'patch: Patch::{patch}, merge_key: "{mk}", list_type: ListType::{lt}, list_keys: &[{lk}], map_type: MapType::{mt} }}')
    atomic = 'true' if struct_atomic.get(full) else 'false'
    out.append(f'    Message {{ name: "{full}", atomic: {atomic}, fields: &[{", ".join(fs)}] }},')
out.append('];')
if missing:
    print('unresolved nested messages: ' + ', '.join(sorted(missing)), file=sys.stderr)
print('\n'.join(out))
