"""The order-consumer's service layer, one concern a module: intake, cancels, placing, the placement
watchdog, IBKR's reports, positions and reconciliation. :class:`~.service.OrderService` puts them together."""
