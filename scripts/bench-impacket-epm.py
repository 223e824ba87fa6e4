#!/usr/bin/python3
"""The yardstick of scripts/bench's EPM row: impacket (Debian's python3-impacket) doing what
`dtcprobe check --list-endpoints epm://HOST?iface=lsarpc` does: list every endpoint mapper entry
(ept_lookup, all fragments) and map lsarpc (ept_map). The same calls as tests/epm_samba.rs."""
import json
import sys

from impacket.dcerpc.v5 import epm, transport
from impacket.uuid import bin_to_string, uuidtup_to_bin

host = sys.argv[1]
dce = transport.DCERPCTransportFactory(r'ncacn_ip_tcp:%s[135]' % host).get_dce_rpc()
dce.connect()
dce.bind(epm.MSRPC_UUID_PORTMAP)
out = []
handle = epm.ept_lookup_handle_t()
for _ in range(64):
    req = epm.ept_lookup()
    req['inquiry_type'] = epm.RPC_C_EP_ALL_ELTS
    req['object'] = epm.NULL
    req['Ifid'] = epm.NULL
    req['vers_option'] = epm.RPC_C_VERS_ALL
    req['entry_handle'] = handle
    req['max_ents'] = 500
    resp = dce.request(req, checkError=False)
    for i in range(resp['num_ents']):
        e = resp['entries'][i]
        floors = epm.EPMTower(b''.join(e['tower']['tower_octet_string']))['Floors']
        out.append({'iface': str(floors[0]).lower(), 'binding': epm.PrintStringBinding(floors),
                    'object': bin_to_string(e['object']).lower()})
    handle = resp['entry_handle']
    if resp['status'] != 0 or handle.isNull():
        break
dce.disconnect()
lsarpc = epm.hept_map(host, uuidtup_to_bin(('12345778-1234-abcd-ef00-0123456789ab', '0.0')),
                      protocol='ncacn_ip_tcp')
print(json.dumps({'entries': len(out), 'lsarpc': lsarpc}))
