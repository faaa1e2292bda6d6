import TSExportCLI

// The executable is a shell: everything lives in TSExportCLI.
TSExportCommand.main()
