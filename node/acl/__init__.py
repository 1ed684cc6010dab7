"""Consul's ACL system: rules, authorizers, tokens, policies and roles.

Pure face: importing ``node.acl`` loads no I/O machinery. The rules language
(``rules``) and the authorizer compiled from it (``authorizer``) are pure; modules that
verify signatures or resolve tokens over the network are imported by name.
"""
