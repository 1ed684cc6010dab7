"""Configuration: HCL/JSON files and flags → frozen ``AgentConfig`` (``node.config.agent``).

``hcl`` reads documents, ``duration`` parses Go durations; every error names the file,
the key path and what was expected.
"""
