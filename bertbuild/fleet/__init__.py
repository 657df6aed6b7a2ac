"""A fleet: several build-bert runs started together, waited for, and reported as one (no Prefect here).

`members` reads and checks the list of builds, `report` turns their published
results into the fleet report (rows, change against the previous fleet run),
and `stored` finds the members' bundles and the previous report in the
artifact store. Its markdown and plot are `bertbuild.reporting.fleet_*`.
The Prefect wiring is `bertbuild/flows/fleet.py` and `bertbuild/tasks/fleet.py`.
"""
