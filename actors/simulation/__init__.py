"""The deterministic whole-system simulation (``exness-actors simulate``): the run and its report
(:mod:`.simulate`), the world of actors on a simulated clock (:mod:`.world`, :mod:`.runtime`)
and the traders that drive it (:mod:`.traders`)."""


from actors.simulation.simulate import SimulationOptions, SimulationError, run_simulation, format_report, report_json

__all__ = ["SimulationOptions", "SimulationError", "run_simulation", "format_report", "report_json"]
