"""Report generation: templates -> executed notebook -> report.html + report.pdf."""

from report.build import SECTIONS, ReportError, Section, build_notebook, build_report

__all__ = ["SECTIONS", "ReportError", "Section", "build_notebook", "build_report"]
