"""Configuration: HCL/JSON files and flags → frozen ``AgentConfig`` (``node.config.agent``).

``hcl`` reads documents, ``reader`` matches raw keys and reads typed values (also for
request bodies), ``duration`` parses Go durations; every config error names the file,
the key path and what was expected.
"""
