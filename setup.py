"""Package discovery for the two source roots of the one `cohort` package.

`shared/cohort` is `cohort` (generated API code, the server platform, the agent SDK) and `services/` is
`cohort.services`, so every import starts at `cohort.` while the repository keeps its top level.
"""

from setuptools import find_packages, setup

packages = (
    find_packages("shared")
    + ["cohort.services"]
    + [f"cohort.services.{name}" for name in find_packages("services")]
)
setup(packages=packages)
