package server

// DashboardLists are the names of the dashboard's list pages.
var DashboardLists = lists
