"""The course's tools: what the `course` command and CI run, and what no notebook imports.

`cli` (the `course` command), `runner` (runs lessons as a benchmark), `report` (one HTML page of results),
`glossary` (links terms in the notebooks), `build` (rebuilds data, tokenizer and models), `launch` (the capstone
recipe as an `accelerate`-launchable script) and `api_contract` (the library signatures the package relies on).
"""
